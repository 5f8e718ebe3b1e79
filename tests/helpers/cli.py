"""The ``zexec`` command as a subprocess, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_SCRIPT = Path(sys.executable).with_name("zexec")
ZEXEC = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zexec.apps.cli"]


def zexec_cli(*args: str, state: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``zexec ARGS --state-dir STATE``; with ``check``, insist on exit status 0. No
    command may print a traceback."""
    proc = subprocess.run(
        [*ZEXEC, *args, "--state-dir", str(state)], capture_output=True, text=True, timeout=600
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc
