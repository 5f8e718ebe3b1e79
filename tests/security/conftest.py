"""Fixtures of the security tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from zexec.adapters.orchestrator_local.isolation import unreachable
from zexec.adapters.orchestrator_local.pythons import find_uv

REPO = Path(__file__).resolve().parents[2]


def reachable_python() -> str | None:
    """A Python 3 interpreter of this X.Y that other uids can reach (the one running the
    tests may live under a closed directory such as /root)."""
    for d in ("/usr/bin", "/usr/local/bin"):
        exe = Path(d) / "python{}.{}".format(*sys.version_info[:2])
        if exe.exists() and not unreachable([exe]):
            return str(exe)
    return None


@pytest.fixture(scope="session")
def reachable_venv():
    """A virtual environment other uids can use, with this checkout installed editable
    (and uv): ``(directory, its zexec command)``. Skips when the machine has no such
    interpreter or this checkout is closed to other uids."""
    python = reachable_python()
    if python is None:
        pytest.skip("no Python interpreter of this version other uids can reach")
    if unreachable([REPO / "src"]):
        pytest.skip(f"this checkout ({REPO}) is closed to other uids")
    d = Path(tempfile.mkdtemp(prefix="zexec-venv-"))
    d.chmod(0o711)
    uv = find_uv()
    subprocess.run([uv, "venv", "--quiet", "--python", python, str(d / "venv")], check=True)
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(d / "venv/bin/python"),
                    "-e", f"{REPO}[api]", "uv"], check=True, timeout=300)
    yield d, str(d / "venv" / "bin" / "zexec")
    shutil.rmtree(d, ignore_errors=True)
