"""The released ``ndp-ep==0.9.0`` + ``scidx-rexec==0.1.0`` clients, unmodified, against
``zexec up`` (every component a real process, the real local orchestrator and uv).

One ``zexec up --state-dir <tmp>`` for the whole module, one environment build
(``python==<this X.Y>`` and nothing else; alice and bob share it). Each legacy test writes a
small script and runs it with the legacy venv's Python (see ``legacy_env.py``) under
``-W error::UserWarning``, so a version warning from ``APIClient(...)`` fails the script.
Scripts print ``RESULT <repr>`` lines that the tests read back. The CLI is used only
through its command line (``zexec up / status --json / down``); pids are checked here,
through ``/proc``, independently of the CLI's own helpers.

The last tests drive the same stack with the zexec SDK (``zexec.connect`` / ``environment``
/ a call / ``terminate``), next to servers the legacy client spawned. Teardown runs
``zexec down`` and checks that no process of the stack (components from ``stack.json``,
every server pid seen, anything whose command line names the state dir) is left.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import zexec
from tests.helpers.procs import alive, in_group, start_time

pytest_plugins = ["legacy_env"]

# The first test pays for `zexec up` and the environment build (uv, ~10-30 s); the legacy
# venv build (first use only) is bounded by legacy_env itself. A hang guard, not a measure.
pytestmark = [pytest.mark.legacy, pytest.mark.timeout(900)]

PY = f"python=={sys.version_info[0]}.{sys.version_info[1]}"
CALL_TIMEOUT = 600.0  # one client script; setup_rexec_environment may build the env
_SCRIPT = Path(sys.executable).with_name("zexec")
ZEXEC = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zexec.apps.cli"]
NOT_READY = "Server not ready/available"

PREAMBLE = """\
import os, sys
from ndp_ep import APIClient
from rexec.client_api import remote_func

PY = os.environ["PY_PIN"]


def result(value):
    print("RESULT", repr(value), flush=True)


def client():
    return APIClient(base_url=os.environ["EP_API_URL"], token=os.environ["EP_TOKEN"])

"""


# --------------------------------------------------------------------------- processes


def processes_naming(text: str) -> list[str]:
    """Live processes whose command line contains ``text`` (e.g. the state dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and alive(int(entry.name)):
            found.append(f"{entry.name}: {cmd.strip()}")
    return found


# --------------------------------------------------------------------------- the stack


def zexec_cli(*args: str, state: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*ZEXEC, *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, (
            f"zexec {args[0]}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@dataclass
class Up:
    state: Path
    stack: dict
    #: every (pid, start time) of this stack seen by the tests: components and servers
    seen: set[tuple[int, int | None]] = field(default_factory=set)

    def servers(self) -> dict[str, dict]:
        """``zexec status --json``'s user servers, by user name."""
        doc = json.loads(zexec_cli("status", "--json", state=self.state).stdout)
        assert {c["state"] for c in doc["components"].values()} == {"up"}, doc
        return {s["user"]: s for s in doc["servers"]}

    def server(self, user: str) -> dict | None:
        row = self.servers().get(user)
        if row is not None and row.get("pid"):
            self.seen.add((row["pid"], start_time(row["pid"])))
        return row

    def log(self, name: str) -> str:
        return zexec_cli("logs", name, "-n", "60", state=self.state, check=False).stdout


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    state = tmp_path_factory.mktemp("ndp-ep") / "state"  # `up` creates it
    try:
        # alice and bob share this stack: on a machine that cannot isolate them, the
        # operator says they trust each other (tests/security covers isolation).
        zexec_cli("up", "--single-trust-domain", state=state)
        stack = json.loads((state / "stack.json").read_text())
    except BaseException:
        zexec_cli("down", state=state, check=False)
        raise
    u = Up(state, stack, {(c["pid"], c.get("start")) for c in stack["components"].values()})
    yield u

    for user in ("alice", "bob"):  # the servers still running now are stopped by `down`
        try:
            u.server(user)
        except AssertionError:
            pass
    down = zexec_cli("down", state=state, check=False)
    left = [pid for pid, start in u.seen if alive(pid, start)]
    named = processes_naming(str(state))
    assert down.returncode == 0, f"zexec down: exit {down.returncode}\n{down.stdout}\n{down.stderr}"
    assert left == [], f"processes of the stack left after `zexec down`: {left}\n{down.stdout}"
    assert named == [], "processes naming the state dir left after `zexec down`:\n" + "\n".join(
        named
    )
    assert not (state / "stack.json").exists()


def run_script(
    legacy_env, up: Up, tmp_path: Path, body: str, user: str = "alice", name: str = "client.py"
) -> subprocess.CompletedProcess:
    """Run ``body`` (after PREAMBLE) with the legacy venv's Python as ``user``."""
    script = tmp_path / name
    script.write_text(PREAMBLE + textwrap.dedent(body))
    env = legacy_env.env(
        EP_API_URL=up.stack["ep_api_url"], EP_TOKEN=up.stack["tokens"][user], PY_PIN=PY
    )
    try:
        return subprocess.run(
            [legacy_env.python, "-W", "error::UserWarning", str(script)],
            env=env,
            cwd=str(tmp_path),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"the legacy client did not finish within {CALL_TIMEOUT:g}s\n"
            f"stdout:\n{exc.stdout}\nstderr:\n{exc.stderr}\n"
            f"deploy-api log:\n{up.log('deploy-api')}\nbroker log:\n{up.log('broker')}"
        )


def results(proc: subprocess.CompletedProcess) -> list:
    assert proc.returncode == 0, f"client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return [
        ast.literal_eval(line[len("RESULT ") :])
        for line in proc.stdout.splitlines()
        if line.startswith("RESULT ")
    ]


SPAWN_AND_CALL = """
    c = client()
    result(c.setup_rexec_environment([PY]))

    @remote_func
    def add(a, b):
        return a + b

    result(add(5, 2))
    result(remote_func(os.getppid)())  # a worker's parent: the user's server
    result(c.get_user_info()["username"])
"""


def _spawn(legacy_env, up: Up, tmp_path: Path, user: str) -> dict:
    proc = run_script(legacy_env, up, tmp_path, SPAWN_AND_CALL, user=user, name=f"spawn_{user}.py")
    setup, added, server_pid, username = results(proc)
    row = up.server(user)
    return {
        "setup": setup,
        "add": added,
        "ppid": server_pid,
        "username": username,
        "row": row,
        "start": start_time(row["pid"]) if row else None,
        "out": proc.stdout,
    }


@pytest.fixture(scope="module")
def alice_server(legacy_env, up, tmp_path_factory):
    """alice's server, spawned by the legacy client (builds the module's one env)."""
    return _spawn(legacy_env, up, tmp_path_factory.mktemp("alice"), "alice")


@pytest.fixture(scope="module")
def bob_server(legacy_env, up, alice_server, tmp_path_factory):
    """bob's server, same requirements: the environment is reused."""
    return _spawn(legacy_env, up, tmp_path_factory.mktemp("bob"), "bob")


# --------------------------------------------------------------------------- legacy client


def test_client_sees_a_compatible_version_and_no_warning(legacy_env, up, tmp_path):
    body = """
        import warnings
        from ndp_ep.version_config import get_minimum_version, is_version_compatible

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            c = client()
        result([str(w.message) for w in caught])
        result(c.api_version)
        result(is_version_compatible(c.api_version, get_minimum_version()))
    """
    proc = run_script(legacy_env, up, tmp_path, body)
    caught, version, compatible = results(proc)
    assert [w for w in caught if "version" in w.lower()] == [], caught
    # The check ran (a version the client could parse) and passed; it is silently
    # skipped when /status/ has no version or one not shaped major.minor.patch.
    assert version is not None and len(version.split(".")) == 3, version
    assert compatible is True
    assert "version" not in proc.stderr.lower(), proc.stderr


def test_get_user_info_returns_the_caller(legacy_env, up, tmp_path):
    body = """
        result(client().get_user_info())
    """
    proc = run_script(legacy_env, up, tmp_path, body)
    [info] = results(proc)
    assert info["username"] == "alice"
    assert info["sub"] == up.stack["users"]["alice"]


def test_search_datasets_finds_seeded_datasets(legacy_env, up, tmp_path):
    body = """
        c = client()
        names = lambda found: sorted(d["name"] for d in found)
        result(names(c.search_datasets(["wildfire"])))                 # server="global"
        result(names(c.search_datasets(["wildfire"], server="local")))
        result(names(c.search_datasets(["hydrology", "california"])))  # all terms match
        result(names(c.search_datasets(["noaa"], keys=["organization"])))
        result(names(c.search_datasets(["no-such-dataset-anywhere"])))
    """
    proc = run_script(legacy_env, up, tmp_path, body)
    wildfire, wildfire_local, hydro_ca, noaa, nothing = results(proc)
    assert {"wifire-burnpro3d-fuel-maps", "wifire-hpwren-camera-stream"} <= set(wildfire)
    assert wildfire_local == wildfire
    assert hydro_ca == ["usgs-nwis-streamflow-ca"]
    assert noaa == ["noaa-hurdat2-atlantic", "noaa-oisst-v2-1-daily"]
    assert nothing == []


def test_setup_rexec_environment_then_remote_func_returns_its_value(up, alice_server):
    setup = alice_server["setup"]
    assert isinstance(setup, dict) and setup.get("phase") == "ready", setup
    assert setup["env"]["python"] == PY.split("==")[1] and setup["env"]["requirements"] == []
    assert setup["outcome"] == "created", setup
    assert alice_server["add"] == 7
    assert alice_server["username"] == "alice"
    row = alice_server["row"]
    assert row is not None and row["phase"] == "ready" and row["registered"], row
    # The pid the orchestrator reports is the process that runs alice's calls.
    assert in_group(row["pid"], alice_server["ppid"]) and alive(row["pid"], alice_server["start"])


def test_bob_gets_his_own_server_from_the_same_environment(up, alice_server, bob_server):
    assert bob_server["add"] == 7 and bob_server["username"] == "bob"
    assert bob_server["setup"]["env"]["digest"] == alice_server["setup"]["env"]["digest"]
    a, b = alice_server["row"], bob_server["row"]
    assert b["phase"] == "ready" and b["user_id"] == up.stack["users"]["bob"]
    assert in_group(b["pid"], bob_server["ppid"]) and b["pid"] != a["pid"]
    envs = [p for p in (up.state / "orchestrator" / "envs").iterdir() if p.is_dir()]
    assert len(envs) == 1, envs  # built once, reused for bob


def test_terminate_leaves_no_server_for_alice_and_spares_bob(
    legacy_env, up, tmp_path, alice_server, bob_server
):
    a_pid, a_start = alice_server["row"]["pid"], alice_server["start"]
    b_pid, b_start = bob_server["row"]["pid"], bob_server["start"]
    assert alive(a_pid, a_start) and alive(b_pid, b_start)

    body = """
        c = client()
        again = c.setup_rexec_environment([PY])   # same requirements: idempotent
        result([again["phase"], again.get("outcome")])

        @remote_func
        def add(a, b):
            return a + b

        result(remote_func(os.getppid)())
        result(c.terminate_rexec_environment())
        print("--- after terminate", flush=True)
        result(add(5, 2))                          # the broker's string, then None
        result(c.terminate_rexec_environment())    # nothing left to terminate
    """
    proc = run_script(legacy_env, up, tmp_path, body)
    (phase, outcome), ppid, first, after, second = results(proc)
    assert phase == "ready" and outcome == "unchanged", outcome
    # The idempotent spawn kept the running server (the same pid as alice's code sees it;
    # the server is gone by now: terminate ran).
    assert ppid == alice_server["ppid"]
    assert isinstance(first, dict) and first["terminated"] is True, first
    assert after is None
    tail = proc.stdout.split("--- after terminate", 1)[1]
    assert NOT_READY in tail, proc.stdout
    assert second["terminated"] is False, second

    # terminate returns once the server is gone: no wait needed.
    assert not alive(a_pid, a_start), f"alice's server {a_pid} still runs after terminate"
    servers = up.servers()
    assert "alice" not in servers, servers
    # alice's terminate touched only her own server.
    assert servers["bob"]["pid"] == b_pid and servers["bob"]["phase"] == "ready"
    assert alive(b_pid, b_start)
    body = """
        c = client()
        c.setup_rexec_environment([PY])
        result(remote_func(os.getppid)())
    """
    proc = run_script(legacy_env, up, tmp_path, body, user="bob", name="bob_again.py")
    assert in_group(b_pid, results(proc)[0])


# --------------------------------------------------------------------------- zexec SDK


def test_sdk_sees_the_server_the_legacy_client_spawned(up, bob_server):
    b_pid = bob_server["row"]["pid"]
    conn = zexec.connect(up.stack["ep_api_url"], up.stack["tokens"]["bob"])
    try:
        st = conn.status()
        assert st["phase"] == "ready" and st["user"] == "bob"
        assert st["env"]["digest"] == bob_server["setup"]["env"]["digest"]
        st = conn.environment([PY], progress=False, timeout=120)  # idempotent: kept
        assert st["phase"] == "ready"
        assert in_group(b_pid, conn.client.call(os.getppid))
        assert up.server("bob")["pid"] == b_pid
    finally:
        conn.close()


def test_sdk_connect_environment_call_terminate(up, bob_server):
    b_pid, b_start = bob_server["row"]["pid"], bob_server["start"]
    conn = zexec.connect(up.stack["ep_api_url"], up.stack["tokens"]["alice"])
    try:
        st = conn.environment([PY], progress=False, timeout=300)  # the env is cached
        assert st["phase"] == "ready" and st["user"] == "alice"
        assert conn.client.call(pow, 2, 10) == 1024
        row = up.server("alice")
        pid = row["pid"]
        assert in_group(pid, conn.client.call(os.getppid)) and row["phase"] == "ready"
        start = start_time(pid)

        done = conn.terminate()
        assert done["terminated"] is True
        assert not alive(pid, start)
        assert conn.status() is None
        assert "alice" not in up.servers()
        with pytest.raises(zexec.ServerUnavailable):  # fails at once instead of hanging
            conn.client.call(pow, 2, 10)
        assert conn.terminate()["terminated"] is False
    finally:
        conn.close()
    # bob's server (spawned by the legacy client) is untouched.
    assert alive(b_pid, b_start)
    assert up.servers()["bob"]["pid"] == b_pid
