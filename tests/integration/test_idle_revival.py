"""A server that stopped for being idle is started again by the next call, against a real
``zexec up`` stack (idle timeout 2 s): the call and a map run on the new server; after
``terminate()``, or after the server crashed, a call fails instead (a crash is not
papered over by a restart)."""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

import zexec
from tests.helpers.cli import zexec_cli
from zexec.apps.client.connect import PYTHON

pytestmark = pytest.mark.timeout(600)  # an environment build; a hang guard


def worker_id() -> str:
    """The worker process as ``pid@start time`` (a sandboxed server has its own pid
    namespace, where every server's first worker may get the same pid)."""
    print("running")
    with open("/proc/self/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]
    return f"{os.getpid()}@{start}"


def wait_for_phase(conn, phase: str, reason: str | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = conn.status()
        if st is not None and st["phase"] == phase and reason in (None, st.get("reason")):
            return
        time.sleep(0.2)
    pytest.fail(f"the server never became {phase} ({conn.status()})")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("revival") / "state"
    zexec_cli("up", "--idle-timeout", "2", state=state)
    info = json.loads((state / "stack.json").read_text())
    yield {**info, "state": state}
    zexec_cli("down", state=state, check=False)


@pytest.fixture
def conn(stack):
    c = zexec.connect(stack["ep_api_url"], stack["tokens"]["alice"])
    c.environment([f"python=={PYTHON}"], progress=False, timeout=600)
    yield c
    c.close()


def test_a_call_after_an_idle_exit_starts_the_server_again(conn, capfd):
    f = zexec.remote(worker_id, client=conn.client)
    first = f()
    wait_for_phase(conn, "terminated", "idle")

    again = f()  # no ServerUnavailable: the same environment starts again
    assert again != first
    assert conn.status()["phase"] == "ready"
    out, err = capfd.readouterr()
    assert "running" in out
    assert "your server had stopped after being idle" in err

    wait_for_phase(conn, "terminated", "idle")
    g = zexec.remote(lambda i: (i, worker_id()), client=conn.client)
    got = list(g.map(range(3), batch_size=1))  # a map finds it gone: the same
    assert [i for i, _ in got] == [0, 1, 2]
    assert again not in {w for _, w in got}  # a third server process

    conn.terminate()  # the user's own stop: the next call is not revived
    with pytest.raises(zexec.ServerUnavailable):
        f()


def test_a_crashed_server_is_not_started_again_behind_the_users_back(stack, conn):
    rows = json.loads(zexec_cli("status", "--json", state=stack["state"]).stdout)["servers"]
    (alice,) = [r for r in rows if r["user"] == "alice"]
    os.kill(alice["pid"], signal.SIGKILL)  # the server crashes
    wait_for_phase(conn, "failed")
    f = zexec.remote(worker_id, client=conn.client)
    with pytest.raises(zexec.ServerUnavailable) as info:
        f()
    if isinstance(info.value, zexec.ServerGone):  # routed before its heartbeats ran out
        with pytest.raises(zexec.ServerUnavailable) as info:
            f()
    assert not isinstance(info.value, zexec.ServerGone)
    assert re.search(r"it failed \(.*SIGKILL.*\); start one with environment",
                     str(info.value)), info.value
    assert conn.status()["phase"] == "failed"  # still: nothing was started
