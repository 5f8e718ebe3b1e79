"""A ``zexec up`` stack survives its own crashes: ``kill -9`` of the web process, of the
broker, or of both, then ``zexec up`` again. It restarts just the dead processes on the
ports pinned in the state directory; the restarted Deploy API adopts alice's server (the
same process: no orphan, no second server fighting it); and alice's open
``zexec.connect`` session keeps working without reconnecting by hand: her 100 calls
after each recovery all succeed.

One stack and one environment for the module; the tests run in file order.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import zexec
from zexec.apps.cli import procs
from zexec.apps.client.connect import PYTHON

pytestmark = pytest.mark.timeout(900)  # the env build; a hang guard, not a measurement

_SCRIPT = Path(sys.executable).with_name("zexec")
ZEXEC = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zexec.apps.cli"]


def cli(*args: str, state: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ZEXEC, *args, "--state-dir", str(state)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def state():
    top = Path(tempfile.mkdtemp(prefix="zexec-recovery-"))
    top.chmod(0o711)  # servers running as other uids pass through it
    d = top / "state"
    cli("up", state=d)
    yield d
    cli("down", state=d)
    assert procs.processes_under(d) == []
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def alice(state):
    stack = json.loads((state / "stack.json").read_text())
    conn = zexec.connect(stack["ep_api_url"], stack["tokens"]["alice"])
    conn.environment([f"python=={PYTHON}"], progress=False, timeout=600)
    yield conn
    conn.close()


def server_groups(state: Path) -> set[int]:
    """Process groups of the servers running for this stack (one per user's server)."""
    return {os.getpgid(p) for p in procs.processes_under(state / "users")
            if procs.alive(p)}


def kill9(state: Path, *names: str) -> None:
    comps = json.loads((state / "stack.json").read_text())["components"]
    for name in names:
        os.kill(comps[name]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30  # a hang guard
    while any(procs.alive(comps[n]["pid"], comps[n]["start"]) for n in names):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def hundred_calls(conn) -> list[str]:
    errors = []
    for i in range(100):
        try:
            assert conn.client.call(pow, i, 2) == i * i
        except zexec.ZexecError as exc:
            errors.append(repr(exc))
    return errors


@pytest.mark.parametrize("dead", [("web",), ("broker",), ("broker", "web")],
                         ids=["web", "broker", "both"])
def test_kill_9_then_up_recovers_and_the_session_keeps_working(state, alice, dead):
    before = json.loads((state / "stack.json").read_text())
    assert hundred_calls(alice) == []
    groups = server_groups(state)
    assert len(groups) == 1
    kill9(state, *dead)
    status = subprocess.run([*ZEXEC, "status", "--state-dir", str(state), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 1  # a component is down, and status says so
    rows = json.loads(status.stdout)["components"]
    assert rows["broker"]["state"] == ("down" if "broker" in dead else "up")
    assert rows["deploy-api"]["state"] == ("down" if "web" in dead else "up")

    out = cli("up", state=state).stdout
    if len(dead) == 1:
        kept = ({"broker", "web"} - set(dead)).pop()
        assert f"restarted {dead[0]}; {kept} kept running" in out
    after = json.loads((state / "stack.json").read_text())
    assert after["ports"] == before["ports"]  # pinned: the session's addresses still hold
    for name in dead:
        assert after["components"][name]["pid"] != before["components"][name]["pid"]
        assert after["components"][name]["cmd"] == before["components"][name]["cmd"]

    # The same server process, adopted (or kept) by the Deploy API: no orphan, no twin.
    assert server_groups(state) == groups
    if "web" in dead:
        assert "adopted the running server of user" in (state / "logs" / "web.log").read_text()
    assert hundred_calls(alice) == []  # the open session reconnected by itself
    assert alice.status()["phase"] == "ready"
    assert "replaced" not in (state / "logs" / "broker.log").read_text()


def test_a_server_the_new_deploy_api_cannot_trust_is_stopped(state, alice):
    """A server that never registered (no ready file) when the Deploy API died is not
    adopted: the new one stops it, and alice simply gets a new server."""
    (group,) = server_groups(state)
    ready = list((state / "orchestrator" / "run").glob("*/ready"))
    assert len(ready) == 1
    kill9(state, "web")
    ready[0].unlink()
    cli("up", state=state)
    assert "never registered with the broker" in (state / "logs" / "web.log").read_text()
    assert group not in server_groups(state) and not procs.alive(group)
    assert alice.status() is None
    alice.environment([f"python=={PYTHON}"], progress=False, timeout=600)
    assert hundred_calls(alice) == []
    assert len(server_groups(state)) == 1
