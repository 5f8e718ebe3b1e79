"""``zexec up`` / ``status`` / ``logs`` / ``down`` as real subprocesses, and remote calls
through ``zexec.connect`` with the real local orchestrator.

One stack and one environment build for the whole module: ``python==<this X.Y>`` and
nothing else, so uv builds a single venv (the local orchestrator installs this zexec
source tree into it, editable). The tests run in file order and share the stack; the
last one stops it and checks that no process of it is left.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import zexec
from zexec.apps.cli import procs
from zexec.apps.client.connect import PYTHON

pytestmark = pytest.mark.timeout(900)  # the env build; a hang guard, not a measurement

_SCRIPT = Path(sys.executable).with_name("zexec")
ZEXEC = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zexec.apps.cli"]
KEYS = {"ep_api_url", "deploy_api_url", "broker_host", "broker_port", "auth_url", "tokens"}


def zexec_cli(*args: str, state: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*ZEXEC, *args, "--state-dir", str(state)], capture_output=True, text=True, timeout=600
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    d = tmp_path_factory.mktemp("zexec-up") / "state"  # up creates it
    up = zexec_cli("up", state=d)
    assert "zexec stack is up" in up.stdout
    yield d
    zexec_cli("down", state=d, check=False)  # after a failure too: leave nothing behind


@pytest.fixture(scope="module")
def stack(state):
    return json.loads((state / "stack.json").read_text())


@pytest.fixture(scope="module")
def alice(stack):
    conn = zexec.connect(stack["ep_api_url"], stack["tokens"]["alice"])
    conn.environment([f"python=={PYTHON}"], progress=False, timeout=600)
    yield conn
    conn.close()


def server_row(state: Path, user: str = "alice") -> dict | None:
    doc = json.loads(zexec_cli("status", "--json", state=state).stdout)
    return next((s for s in doc["servers"] if s["user"] == user), None)


def test_up_writes_stack_json_and_private_files(state, stack):
    assert KEYS <= set(stack)
    assert set(stack["tokens"]) == set(stack["users"]) == {"alice", "bob"}
    assert stack["ep_api_url"].startswith("http://127.0.0.1:")
    assert stack["auth_url"].endswith("/auth")
    assert isinstance(stack["broker_port"], int)
    assert set(stack["components"]) == {"devidp", "broker", "deploy-api", "ep-api"}
    for name in ("stack.json", "tokens.json", "server_secret", "admin_token"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name


def test_up_again_is_idempotent(state, stack):
    again = zexec_cli("up", state=state)
    assert "already running" in again.stdout
    assert stack["tokens"]["alice"] in again.stdout
    assert json.loads((state / "stack.json").read_text())["components"] == stack["components"]


def test_remote_calls_through_connect(alice, capfd):
    @zexec.remote
    def shout(word):
        print(f"remote says {word}")
        return word.upper()

    @zexec.remote
    def count(n):
        yield from range(n)

    @zexec.remote
    def fail():
        raise ValueError("from the server")

    assert shout("hi") == "HI"
    assert "remote says hi" in capfd.readouterr().out
    assert list(count(3)) == [0, 1, 2]
    with pytest.raises(ValueError, match="from the server"):
        fail()
    assert list(shout.map(["a", "b"])) == ["A", "B"]
    assert alice.status()["phase"] == "ready"


def test_status_shows_components_and_the_user_server(state, alice):
    doc = json.loads(zexec_cli("status", "--json", state=state).stdout)
    assert {c["state"] for c in doc["components"].values()} == {"up"}
    (row,) = doc["servers"]
    assert row["user"] == "alice" and row["phase"] == "ready" and row["registered"]
    assert row["python"] == PYTHON and procs.alive(row["pid"])
    table = zexec_cli("status", state=state).stdout
    assert "deploy-api  up" in table and f"alice       ready      python {PYTHON}" in table


def test_logs_of_a_component_and_of_a_server(state, alice):
    out = zexec_cli("logs", "broker", "-n", "50", state=state).stdout
    assert "broker listening" in out
    assert "zexec.apps.server" in zexec_cli("logs", "alice", state=state).stdout


def test_terminate_stops_the_server_and_respawn_reuses_the_env(state, alice):
    pid = server_row(state)["pid"]
    assert alice.terminate()["terminated"] is True
    assert not procs.alive(pid)  # terminate returns after the server is gone
    assert alice.status() is None
    st = alice.environment([f"python=={PYTHON}"], progress=False)
    assert st["phase"] == "ready"
    envs = [p for p in (state / "orchestrator" / "envs").iterdir() if p.is_dir()]
    assert len(envs) == 1  # built once, reused


def test_down_leaves_no_process_behind(state, stack, alice):
    worker = alice.client.call(os.getpid)  # a worker of alice's server
    server = server_row(state)["pid"]
    tracked = [(c["pid"], c["start"]) for c in stack["components"].values()]
    tracked += [(server, procs.start_time(server)), (worker, procs.start_time(worker))]
    assert all(procs.alive(p, s) for p, s in tracked)
    out = zexec_cli("down", state=state).stdout
    assert "stopped" in out
    assert "leftover" not in out  # the Deploy API stopped the server itself, on SIGTERM
    assert [p for p, s in tracked if procs.alive(p, s)] == []
    assert procs.processes_under(state) == []
    assert not (state / "stack.json").exists()
    assert "no zexec stack" in zexec_cli("down", state=state).stdout
    with pytest.raises(zexec.ZexecError):  # a call now fails cleanly instead of hanging
        alice.client.call(os.getpid)
