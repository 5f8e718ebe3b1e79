"""The wheel of this repository, built once per test session with ``uv build`` (the
build backend comes from the package index, as for any user building it)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import zipfile
from email.parser import Parser
from functools import lru_cache
from pathlib import Path

from zexec.adapters.orchestrator_local import find_uv

REPO = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=1)
def built_wheel() -> Path:
    """Path of ``zexec-*.whl`` built from the working tree (kept for the session)."""
    out = Path(tempfile.mkdtemp(prefix="zexec-test-wheel-"))
    # A copy of the tree without build/: setuptools would reuse a stale staging dir.
    src = out / "src-tree"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".state", "build", "dist", "*.egg-info", "__pycache__", ".git", "bench"))
    done = subprocess.run([find_uv(), "build", "--quiet", "--wheel", "--out-dir",
                           str(out / "dist"), str(src)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (out / "dist").glob("zexec-*.whl")
    return wheel


def wheel_metadata(wheel: Path) -> tuple[list[str], dict]:
    """``(file names, parsed METADATA)`` of a wheel."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(z.read(meta_name).decode())
    return names, meta
