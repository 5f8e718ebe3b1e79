"""``zexec up`` / ``status`` / ``logs`` / ``down`` as real subprocesses, and remote calls
through ``zexec.connect`` with the real local orchestrator.

One stack and one environment build for the whole module: ``python==<this X.Y>`` and
nothing else, so uv builds a single venv (the local orchestrator installs a wheel of this
zexec into it). The tests run in file order and share the stack; the
down test stops it and checks that no process of it is left; the last one starts it again
and stops the web process alone with SIGTERM, as a supervisor would.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

import zexec
from tests.helpers.cli import ZEXEC, zexec_cli
from zexec.apps.cli import procs
from zexec.apps.client.connect import PYTHON

pytestmark = pytest.mark.timeout(900)  # the env build; a hang guard, not a measurement

KEYS = {"ep_api_url", "deploy_api_url", "broker_host", "broker_port", "auth_url", "tokens"}


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


def group_members(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``, as this (host) pid namespace sees them."""
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
            and (f := procs.stat_fields(int(p.name))) and int(f[2]) == pgid and f[0] != "Z"]


def server_row(state: Path, user: str = "alice") -> dict | None:
    doc = json.loads(zexec_cli("status", "--json", state=state).stdout)
    return next((s for s in doc["servers"] if s["user"] == user), None)


def test_up_writes_stack_json_and_private_files(state, stack):
    assert KEYS <= set(stack)
    assert set(stack["tokens"]) == set(stack["users"]) == {"alice", "bob"}
    assert stack["ep_api_url"].startswith("http://127.0.0.1:")
    assert stack["auth_url"].endswith("/auth")
    assert isinstance(stack["broker_port"], int)
    # Two processes: the broker and the web process serving the three HTTP apps.
    assert set(stack["components"]) == {"broker", "web"}
    web = stack["components"]["web"]
    assert set(web["apps"]) == {"devidp", "deploy-api", "ep-api"}
    assert web["apps"]["ep-api"]["url"] == stack["ep_api_url"]
    assert web["apps"]["devidp"]["url"] == stack["auth_url"]
    assert web["log"] == str(state / "logs" / "web.log")
    for name in ("stack.json", "tokens.json", "ports.json", "secrets/ZEXEC_BROKER_SERVER_SECRET",
                 "secrets/ZEXEC_BROKER_ADMIN_TOKEN", "secrets/broker_tls.key"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    for name in ("secrets", "logs"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o700, name
    # Each process's command line is recorded; no secret is in its environment.
    for comp in stack["components"].values():
        assert Path(comp["cmd"][0]).resolve() == Path(sys.executable).resolve()
        assert comp["cmd"][1:3] == ["-m", "zexec.apps.cli"]
        environ = Path(f"/proc/{comp['pid']}/environ").read_bytes()
        assert b"ZEXEC_SECRETS_DIR=" + str(state / "secrets").encode() in environ
        for secret in ("server_secret", "admin_token"):
            assert (state / "secrets").exists() and secret not in environ.decode()
        for f in (state / "secrets").iterdir():
            assert f.read_bytes().strip() not in environ


def test_up_again_is_idempotent(state, stack):
    again = zexec_cli("up", state=state)
    assert "already running" in again.stdout
    assert stack["tokens"]["alice"] in again.stdout
    assert json.loads((state / "stack.json").read_text())["components"] == stack["components"]


def test_up_prints_what_to_paste(state, stack):
    out = zexec_cli("up", state=state).stdout  # running already: prints the same banner
    # The zexec that ran, by its full path: a venv's bin/ is often not on PATH.
    assert f"stop it with: {' '.join(ZEXEC)} down --state-dir {state}" in out
    assert ZEXEC[0].startswith("/")
    # The broker port the SDK will use, as /broker-config reports it: on loopback the
    # plain one (docs/security.md), with the TLS port for encrypt=True beside it.
    assert f"tcp://127.0.0.1:{stack['broker_port']}  (what zexec.connect uses" in out
    assert f"tls://127.0.0.1:{stack['broker_secure_port']}  (zexec.connect(..., encrypt" in out


def test_readme_lists_every_stack_json_key(stack):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme[readme.index("Its keys:"):readme.index("## The `zexec` command")]
    listed = set()
    for row in table.splitlines()[4:]:
        if row.startswith("| `"):
            listed |= {k.strip("` ") for k in row.split("|")[1].split(",")}
    assert listed == set(stack)


def test_connect_to_the_deploy_api_url_says_which_url_to_use(stack):
    for wrong in (stack["deploy_api_url"], stack["deploy_api_url"] + "/rexec"):
        with pytest.raises(zexec.ControlPlaneError, match="is a Deploy API, not an EP API.*"
                           "ep_api_url in stack.json"):
            zexec.connect(wrong, stack["tokens"]["alice"])
    broker = f"tcp://127.0.0.1:{stack['broker_port']}"
    with pytest.raises(zexec.ZexecError, match="is a broker address.*zexec.Client"):
        zexec.connect(broker, stack["tokens"]["alice"])


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
    assert list(doc["components"]) == ["devidp", "broker", "deploy-api", "ep-api"]
    assert {c["state"] for c in doc["components"].values()} == {"up"}
    web = json.loads((state / "stack.json").read_text())["components"]["web"]["pid"]
    assert {doc["components"][n]["pid"] for n in ("devidp", "deploy-api", "ep-api")} == {web}
    (row,) = doc["servers"]
    assert row["user"] == "alice" and row["phase"] == "ready" and row["registered"]
    assert row["python"] == PYTHON and procs.alive(row["pid"])
    table = zexec_cli("status", state=state).stdout
    assert "deploy-api  up" in table and f"alice       ready      python {PYTHON}" in table


def test_logs_of_a_component_and_of_a_server(state, alice):
    out = zexec_cli("logs", "broker", "-n", "50", state=state).stdout
    assert "broker listening" in out
    assert "zexec.apps.server" in zexec_cli("logs", "alice", state=state).stdout
    # The web process's log tags each line with its app; `logs APP` shows that app's.
    web = zexec_cli("logs", "web", "-n", "1000", state=state).stdout
    for app in ("devidp", "deploy-api", "ep-api"):
        assert f"[{app}] uvicorn.error INFO Application startup complete" in web
    deploy = zexec_cli("logs", "deploy-api", "-n", "1000", state=state).stdout
    assert "[deploy-api] uvicorn.access INFO" in deploy and "POST /rexec/spawn" in deploy
    assert "[ep-api]" not in deploy and "[devidp]" not in deploy
    assert "GET /status/rexec" in zexec_cli("logs", "ep-api", "-n", "1000", state=state).stdout


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
    alice.client.call(os.getpid)  # a worker of alice's server runs
    server = server_row(state)["pid"]
    tracked = [(c["pid"], c["start"]) for c in stack["components"].values()]
    # The server's process group: the server (maybe in a sandbox) and its workers.
    group = group_members(server)
    assert len(group) >= 2
    tracked += [(p, procs.start_time(p)) for p in group]
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


def test_sigterm_to_the_web_process_stops_the_users_servers(state):
    """The web process alone gets SIGTERM (a supervisor, a reboot): every app's lifespan
    shutdown runs, and the Deploy API's stops alice's server before the process exits."""
    zexec_cli("up", state=state)  # again, after the down test; the environment is cached
    stack = json.loads((state / "stack.json").read_text())
    web = stack["components"]["web"]
    with zexec.connect(stack["ep_api_url"], stack["tokens"]["alice"]) as conn:
        conn.environment([f"python=={PYTHON}"], progress=False, timeout=600)
        server = server_row(state)["pid"]
    server_start = procs.start_time(server)
    assert procs.alive(server, server_start)
    os.kill(web["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 120  # a hang guard, not a measurement
    while procs.alive(web["pid"], web["start"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not procs.alive(web["pid"], web["start"])
    assert not procs.alive(server, server_start)  # stopped by the Deploy API, not by us
    assert procs.processes_under(state / "orchestrator") == []
    log = (state / "logs" / "web.log").read_text()
    for app in ("devidp", "deploy-api", "ep-api"):
        assert f"[{app}] uvicorn.error INFO Application shutdown complete" in log
        assert f"[{app}] uvicorn.error INFO Finished server process" in log
    doc = json.loads(zexec_cli("status", "--json", state=state, check=False).stdout)
    assert {n: c["state"] for n, c in doc["components"].items()} == {
        "devidp": "down",
        "broker": "up",
        "deploy-api": "down",
        "ep-api": "down",
    }
    out = zexec_cli("down", state=state).stdout
    assert "leftover" not in out and "killed" not in out
    assert not procs.alive(stack["components"]["broker"]["pid"])
