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
import uuid
from pathlib import Path

import cloudpickle
import pytest

import tests.helpers.tenant_probes as tenant_probes
import zexec
from zexec.apps.cli import procs
from zexec.apps.client.connect import PYTHON
from zexec.core.protocol import server_credential

pytestmark = pytest.mark.timeout(900)  # env builds; a hang guard, not a measurement

_SCRIPT = Path(sys.executable).with_name("zexec")
ZEXEC = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "zexec.apps.cli"]
REQS = [f"python=={PYTHON}"]


def cli(*args: str, state: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ZEXEC, *args, "--state-dir", str(state)], capture_output=True,
                          text=True, timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def state():
    # Not pytest's tmp_path: its parents are 0700, and servers running as other uids
    # without a sandbox must pass through the state directory's parents.
    top = Path(tempfile.mkdtemp(prefix="zexec-tenants-"))
    top.chmod(0o711)
    d = top / "state"
    up = cli("up", state=d)
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


def test_alice_cannot_touch_bob(state, stack, mode):
    if mode == "none":
        pytest.skip("this machine cannot isolate users: the refusal test runs instead")
    bob = connect(stack, "bob")
    alice = connect(stack, "alice")

    def plant():
        import os

        with open("secret.txt", "w") as f:
            f.write("bob's private data")
        os.chmod("secret.txt", 0o644)  # the directory alone must keep it private
        return os.getcwd(), os.getuid()

    bob_dir, bob_uid = bob.client.call(plant)
    rows = {s["user"]: s for s in json.loads(cli("status", "--json", state=state).stdout)
            ["servers"]}
    bob_pid = rows["bob"]["pid"]
    bob_start = procs.start_time(bob_pid)
    secret = (state / "secrets" / "ZEXEC_BROKER_SERVER_SECRET").read_text().strip()
    control_id = f"probe-control-{uuid.uuid4().hex[:8]}"
    targets = {
        "stack_files": [str(state / n) for n in (
            "stack.json", "tokens.json", "secrets/ZEXEC_BROKER_SERVER_SECRET",
            "secrets/ZEXEC_BROKER_ADMIN_TOKEN", "secrets/ZEXEC_BROKER_CURVE_SECRET_KEY")],
        "pids": {"bob's server": bob_pid, "broker": stack["components"]["broker"]["pid"],
                 "web": stack["components"]["web"]["pid"]},
        "other_files": [bob_dir, f"{bob_dir}/secret.txt"],
        "other_log": str(state / "orchestrator" / "logs" / f"{stack['users']['bob']}.log"),
        "backend": f"tcp://127.0.0.1:{stack['broker_backend_port']}",
        "other_user_id": stack["users"]["bob"],
        "control": (control_id, server_credential(secret.encode(), control_id)),
    }
    assert Path(targets["other_log"]).exists() and Path(bob_dir, "secret.txt").exists()
    cloudpickle.register_pickle_by_value(tenant_probes)
    try:
        got = alice.client.call(tenant_probes.probe_all, targets)
    finally:
        cloudpickle.unregister_pickle_by_value(tenant_probes)
    print(f"\nisolation {mode}\n" + tenant_probes.table(got["results"]))
    assert got["control_registered"], "the registration probe could not register at all"
    refused = {name: r["refused"] for name, r in got["results"].items()}
    assert refused == dict.fromkeys(tenant_probes.PROBES, True), got["results"]

    # Nothing alice can read of any process's environment holds a secret or a token,
    # her own server's credential included (it came over a pipe).
    values = [secret, *stack["tokens"].values(),
              (state / "secrets" / "ZEXEC_BROKER_ADMIN_TOKEN").read_text().strip(),
              (state / "secrets" / "ZEXEC_BROKER_CURVE_SECRET_KEY").read_text().strip(),
              *(server_credential(secret.encode(), stack["users"][u]) for u in ("alice", "bob"))]
    for pid, text in got["readable_environ"].items():
        assert not [v for v in values if v in text], f"a secret in /proc/{pid}/environ"

    # Bob's server is untouched and still his: same process, same uid, working.
    assert procs.alive(bob_pid, bob_start)
    assert bob.client.call(os.getuid) == bob_uid
    alice_uid = alice.client.call(os.getuid)
    if mode.startswith("uid"):
        assert alice_uid != bob_uid and 0 not in (alice_uid, bob_uid)
    alice.close()
    bob.close()
