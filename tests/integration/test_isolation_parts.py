"""The confinement of a user's server, run for real (as root): the command line
:class:`~zexec.adapters.orchestrator_local.tenancy.Tenancy` builds for each isolation
mode starts a probe instead of a server, which reports what it is and what it can see."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from zexec.adapters.orchestrator_local.isolation import Isolation, bwrap_problem, unreachable
from zexec.adapters.orchestrator_local.pythons import running_python
from zexec.adapters.orchestrator_local.tenancy import Tenancy
from zexec.adapters.orchestrator_local.uids import UidMap

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root"),
]

PROBE = r"""
import json, os, sys
state = sys.argv[1]
def can(fn):
    try:
        fn()
        return True
    except OSError:
        return False
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
print(json.dumps({
    "uid": os.getresuid(), "gid": os.getresgid(), "groups": os.getgroups(),
    "no_new_privs": status["NoNewPrivs"].strip(), "cap_eff": status["CapEff"].strip(),
    "umask": os.umask(0o077), "cwd": os.getcwd(),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "see_state": os.path.exists(os.path.join(state, "secret")),
    "read_state": can(lambda: open(os.path.join(state, "secret")).read()),
    "write_cwd": can(lambda: open("mine.txt", "w").write("x")),
    "write_tmp": can(lambda: open("/tmp/x", "w").write("x")),
    "write_env": can(lambda: open(os.path.join(sys.argv[2], "planted"), "w").write("x")),
}))
"""


@pytest.fixture
def base():
    d = Path(tempfile.mkdtemp(prefix="zexec-iso-"))
    d.chmod(0o711)
    (d / "state").mkdir()
    (d / "state" / "secret").write_text("stack secret")
    (d / "state" / "secret").chmod(0o600)
    (d / "state" / "envs" / "e1").mkdir(parents=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_probe(base: Path, iso: Isolation, interpreter: str) -> dict:
    tenancy = Tenancy(iso, base / "state", base / "users", UidMap(base / "uids.json"))
    tenant = tenancy.tenant("id-alice", "alice")
    env = base / "state" / "envs" / "e1"
    argv = tenancy.argv(tenant, [interpreter, "-I", "-c", PROBE, str(base / "state"), str(env)],
                        env, interpreter)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tenant.workdir,
                         start_new_session=True)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    got["tenant_uid"] = tenant.uid
    return got


def assert_confined_uid(got: dict) -> None:
    uid = got["tenant_uid"]
    assert uid and got["uid"] == [uid] * 3 and got["gid"] == [uid] * 3
    assert got["groups"] == [] and got["no_new_privs"] == "1" and int(got["cap_eff"], 16) == 0
    assert got["umask"] == 0o077  # the user's new files are private
    assert not got["read_state"] and not got["write_env"]
    assert got["write_cwd"] and got["write_tmp"]


def test_uid_and_sandbox(base):
    bwrap = shutil.which("bwrap")
    if bwrap is None or bwrap_problem(bwrap):
        pytest.skip("bubblewrap is missing or cannot make namespaces here")
    got = run_probe(base, Isolation("uid+sandbox", bwrap, why="test"), running_python()[1])
    assert_confined_uid(got)
    assert not got["see_state"]  # not shown at all
    assert len(got["pids"]) <= 3  # its own pid namespace: bubblewrap's init and itself


def test_uid_without_sandbox(base):
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3", sys.executable)
                   if Path(p).exists() and not unreachable([p])), None)
    if python is None:
        pytest.skip("no interpreter other uids can reach")
    got = run_probe(base, Isolation("uid", why="test"), python)
    assert_confined_uid(got)
    assert got["see_state"]  # visible, but closed (0600 and 0700)
    assert len(got["pids"]) > 3  # the machine's processes are visible, not readable


def test_sandbox_without_root_privileges(base):
    """The unprivileged sandbox, as a non-root stack runs it: the same uid as the stack,
    in a user namespace, seeing none of the state directory."""
    bwrap = shutil.which("bwrap")
    uid = 60998
    if bwrap is None or subprocess.run(
            [bwrap, "--unshare-pid", "--ro-bind", "/", "/", "true"], user=uid, group=uid,
            extra_groups=[], capture_output=True).returncode != 0:
        pytest.skip("bubblewrap is missing or unprivileged user namespaces are off")
    python = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3")
                   if Path(p).exists() and not unreachable([p])), None)
    if python is None:
        pytest.skip("no interpreter other uids can reach")
    for d in (base / "state", base / "state" / "envs", base / "state" / "envs" / "e1"):
        os.chown(d, uid, uid)
    os.chmod(base / "state", 0o700)
    tenancy = Tenancy(Isolation("sandbox", bwrap, why="test"), base / "state", base / "users")
    tenant = tenancy.tenant("id-alice", "alice")
    for d in (base / "users", tenant.workdir, tenant.rundir, base / "state" / "run"):
        os.chown(d, uid, uid)
    env = base / "state" / "envs" / "e1"
    os.chmod(env, 0o755)
    argv = tenancy.argv(tenant, [python, "-I", "-c", PROBE, str(base / "state"), str(env)],
                        env, python)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, user=uid, group=uid,
                         extra_groups=[], cwd=tenant.workdir)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["uid"][0] == uid
    assert not got["see_state"] and not got["write_env"]  # env bound read-only
    assert got["write_cwd"] and got["write_tmp"] and len(got["pids"]) <= 3
