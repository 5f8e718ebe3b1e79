"""Attacks on the broker's front doors: real broker, servers and clients as processes on
loopback (tests/helpers/stack.py), hostile peers speaking raw ZMTP
(tests/helpers/raw_zmtp.py) or libzmq. Every test asserts the same three things after its
attack: the broker is alive, a legitimate user's calls are answered, and the broker's
memory stayed within its budget. Bounded by pytest's timeout, never by wall-clock
thresholds. The tenant attacks (``test_tenants*.py``) run a real ``zexec up`` stack
instead, from a virtual environment other uids can use (``reachable_venv``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers.stack import Stack, wait_for
from zexec.adapters.orchestrator_local.isolation import unreachable
from zexec.adapters.orchestrator_local.pythons import find_uv
from zexec.apps.devidp.tokens import user_id_for

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



@pytest.fixture(scope="module")
def attack_stack(tmp_path_factory):
    """Broker + servers for alice (the attacker's own account, where one is needed) and
    bob (the bystander whose calls must keep being answered)."""
    s = Stack(tmp_path_factory.mktemp("attack"))
    s.start_broker()
    s.start_server("alice", workers=1)
    s.start_server("bob", workers=1)
    yield s
    s.close()


@pytest.fixture
def stack(attack_stack):
    """The module's stack, revived if a previous test killed part of it."""
    s = attack_stack
    if s.broker is None or s.broker.poll() is not None:
        s.start_broker()
    for user in ("alice", "bob"):
        def registered(user=user) -> bool:
            server = s.servers.get(user)
            if server is None or server.poll() is not None:
                s.servers.pop(user, None)
                s.start_server(user, workers=1)
            try:
                return user_id_for(user) in s.control_command(b"STATUS")["status"]["servers"]
            except Exception:
                return False
        wait_for(registered, what=f"{user}'s server")
    return s
