"""Two users, alice and bob, on one real ``zexec up`` stack: alice's remote code tries
every attack of issue 9 on bob and on the stack (see ``tests/helpers/tenant_probes.py``)
and each must be refused; bob's server survives and keeps serving him.

The stack isolates as well as this machine allows (``--isolation auto``): as root, each
server runs as its own uid, in a bubblewrap sandbox when bubblewrap works. When the
machine cannot isolate, the test checks instead that the stack says so and refuses bob.
``test_tenants_nonroot.py`` runs the stack as an unprivileged uid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cloudpickle
import pytest

import tests.helpers.tenant_probes as tenant_probes
import zexec
from zexec.apps.cli import procs
from zexec.apps.client.connect import PYTHON

pytestmark = pytest.mark.timeout(900)  # env builds; a hang guard, not a measurement

_SCRIPT = Path(sys.executable).with_name("zexec")
ZEXEC = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zexec.apps.cli"]
#: The zexec command of each stack (state dir) not run from this interpreter's venv.
COMMANDS: dict[Path, list[str]] = {}
REQS = [f"python=={PYTHON}"]


def cli(*args: str, state: Path, check: bool = True) -> subprocess.CompletedProcess:
    command = COMMANDS.get(state, ZEXEC)
    proc = subprocess.run([*command, *args, "--state-dir", str(state)], capture_output=True,
                          text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module", params=["auto", "uid"])
def state(request):
    """A stack isolating as this machine allows (``auto``), and one isolating by uid
    alone (as root on a machine without bubblewrap), run from a virtual environment
    other uids can reach (see conftest)."""
    # Not pytest's tmp_path: its parents are 0700, and servers running as other uids
    # without a sandbox must pass through the state directory's parents.
    top = Path(tempfile.mkdtemp(prefix="zexec-tenants-"))
    top.chmod(0o711)
    d = top / "state"
    if request.param == "uid":
        if os.geteuid() != 0:
            pytest.skip("isolation by uid needs root")
        COMMANDS[d] = [request.getfixturevalue("reachable_venv")[1]]
    up = cli("up", "--isolation", request.param, state=d)
    d.joinpath("up.out").write_text(up.stdout)
    yield d
    cli("down", state=d, check=False)
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(state):
    return json.loads((state / "stack.json").read_text())


@pytest.fixture(scope="module")
def mode(stack):
    return stack["isolation"]["mode"]


def connect(stack, user: str):
    conn = zexec.connect(stack["ep_api_url"], stack["tokens"][user])
    conn.environment(REQS, progress=False, timeout=600)
    return conn


def test_up_and_status_say_how_users_are_isolated(state, stack, mode):
    out = (state / "up.out").read_text()
    assert f"isolation       {mode}: " in out
    status = cli("status", state=state).stdout
    assert f"isolation   {mode}: " in status
    assert json.loads(cli("status", "--json", state=state).stdout)["isolation"]["mode"] == mode
    if os.geteuid() == 0:
        assert mode in ("uid+sandbox", "uid", "none")
    if stack["options"]["isolation"] == "uid":
        assert mode == "uid"
    if mode == "none":
        assert "WARNING: the users of this stack are not isolated" in out
        assert "a second user is refused" in status


def test_a_second_user_is_refused_when_users_cannot_be_isolated(stack, mode):
    if mode != "none":
        pytest.skip(f"this machine isolates users ({mode}): test_alice_cannot_touch_bob runs")
    with zexec.connect(stack["ep_api_url"], stack["tokens"]["alice"]) as alice:
        alice.environment(REQS, progress=False, timeout=600)
    with zexec.connect(stack["ep_api_url"], stack["tokens"]["bob"]) as bob, \
            pytest.raises(zexec.Forbidden, match="cannot isolate users.*serves one user only"):
        bob.environment(REQS, progress=False, timeout=600)


@pytest.fixture
def probes_by_value():
    """The probes travel by value: the servers cannot import ``tests``."""
    cloudpickle.register_pickle_by_value(tenant_probes)
    yield
    cloudpickle.unregister_pickle_by_value(tenant_probes)


def test_alice_cannot_touch_bob(state, stack, mode, probes_by_value):
    if mode == "none":
        pytest.skip("this machine cannot isolate users: the refusal test runs instead")
    bob = connect(stack, "bob")
    alice = connect(stack, "alice")

    bob_dir, bob_uid = bob.client.call(tenant_probes.plant)
    rows = {s["user"]: s for s in json.loads(cli("status", "--json", state=state).stdout)
            ["servers"]}
    bob_pid = rows["bob"]["pid"]
    bob_start = procs.start_time(bob_pid)
    targets = tenant_probes.targets(state, stack, bob_dir, bob_pid)
    assert Path(targets["other_log"]).exists() and Path(bob_dir, "secret.txt").exists()
    got = alice.client.call(tenant_probes.probe_all, targets)
    print(f"\nisolation {mode}\n" + tenant_probes.table(got["results"]))
    assert got["control_registered"], "the registration probe could not register at all"
    refused = {name: r["refused"] for name, r in got["results"].items()}
    assert refused == dict.fromkeys(tenant_probes.PROBES, True), got["results"]

    # Nothing alice can read of any process's environment holds a secret or a token,
    # her own server's credential included (it came over a pipe).
    assert tenant_probes.leaks(got, tenant_probes.stack_secrets(state, stack)) == {}

    # Bob's server is untouched and still his: same process, same uid, working.
    assert procs.alive(bob_pid, bob_start)
    assert bob.client.call(os.getuid) == bob_uid
    alice_uid = alice.client.call(os.getuid)
    if mode.startswith("uid"):
        assert alice_uid != bob_uid and 0 not in (alice_uid, bob_uid)
    alice.close()
    bob.close()
