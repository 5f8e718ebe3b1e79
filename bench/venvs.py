"""Virtual environments of the peers the benchmarks compare with (Ray, Dask, the legacy
client), built with uv on first use and reused while they still import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def uv() -> str:
    """The project's uv, else one on PATH."""
    local = REPO / ".venv" / "bin" / "uv"
    return str(local) if local.exists() else (shutil.which("uv") or "uv")


def ensure_venv(venv: Path, packages: Sequence[str], check: str, *, install: bool,
                say: Callable[[str], None]) -> Path:
    """The venv's interpreter, creating the venv if it is missing or ``check`` (Python
    code) fails in it."""
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", check], capture_output=True).returncode == 0:
        return py
    if not install:
        raise RuntimeError(f"{venv} is missing or incomplete (run without --no-install)")
    say(f"creating {venv.relative_to(REPO)} with uv: {' '.join(packages)}")
    subprocess.run([uv(), "venv", "-q", "--allow-existing", "--python", sys.executable,
                    str(venv)], check=True, timeout=300)
    subprocess.run([uv(), "pip", "install", "-q", "--python", str(py), *packages],
                   check=True, timeout=900)
    return py
