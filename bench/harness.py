"""What both benchmark scripts need around the measurements: the peers' virtual
environments (Ray, Dask, the legacy client), built with uv on first use and reused while
they still import, and a sweep that leaves no process of a run behind."""

from __future__ import annotations

import os
import shutil
import signal
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


def sweep(run_id: str) -> list[int]:
    """SIGKILL every process whose environment carries ``BENCH_RUN_ID=run_id``; returns
    their pids (every process a run starts inherits the variable)."""
    marker = f"BENCH_RUN_ID={run_id}".encode()
    killed, me = [], os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    return killed
