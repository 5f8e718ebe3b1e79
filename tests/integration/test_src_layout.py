"""A checkout named like the package must not shadow the installed zexec.

With the repository cloned as ``~/zexec`` and Python started in ``~``, the checkout
directory is importable as an (empty) namespace package ``zexec``. The ``src/`` layout
keeps the real package one level down, so the installed one always wins.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_checkout_named_zexec_does_not_shadow_the_package(tmp_path: Path) -> None:
    (tmp_path / "zexec").symlink_to(REPO, target_is_directory=True)
    out = subprocess.run(
        [sys.executable, "-c", "import zexec; print(zexec.__file__); print(callable(zexec.connect))"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    path, has_connect = out.stdout.split()
    assert path.endswith("src/zexec/__init__.py") and has_connect == "True"
