"""The parts of local isolation and recovery, on their own: which mode a machine gets,
the sandbox's command line, uid allocation, server records and who may be adopted, the
one-user rule without isolation, and the stopped-worker watch."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from zexec.adapters.orchestrator_local.isolation import (
    Isolation,
    resolve,
    sandbox_argv,
    unreachable,
)
from zexec.adapters.orchestrator_local.records import Records, distrust
from zexec.adapters.orchestrator_local.tenancy import Tenancy
from zexec.adapters.orchestrator_local.uids import UidMap, parse_accounts, parse_range
from zexec.apps.server.stopped import StoppedWatch
from zexec.core import protocol as p
from zexec.core.errors import ConfigurationError, Forbidden, OrchestratorError


@pytest.fixture
def open_tmp():
    """A directory every uid may pass through (pytest's tmp_path sits below a 0700 one)."""
    d = Path(tempfile.mkdtemp(prefix="zexec-test-"))
    d.chmod(0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fake_bwrap(tmp_path: Path, works: bool) -> str:
    path = tmp_path / ("bwrap-ok" if works else "bwrap-broken")
    path.write_text("#!/bin/sh\n" + ("exit 0\n" if works else "echo 'no namespaces' >&2; exit 1\n"))
    path.chmod(0o755)
    return str(path)


# ------------------------------------------------------------------ modes


@pytest.mark.parametrize(("euid", "works", "mode"), [
    (0, True, "uid+sandbox"), (0, False, "uid"), (1000, True, "sandbox"), (1000, False, "none"),
])
def test_auto_picks_the_strongest_mode_the_machine_allows(tmp_path, euid, works, mode):
    iso = resolve("auto", euid=euid, bwrap=fake_bwrap(tmp_path, works))
    assert iso.mode == mode
    assert iso.uid == mode.startswith("uid") and iso.sandbox == mode.endswith("sandbox")
    assert (iso.bwrap is not None) == iso.sandbox
    assert iso.why.startswith("auto: " + ("root" if euid == 0 else "not root"))
    if not works:
        assert "no namespaces" in iso.why


def test_root_without_a_sandbox_cannot_isolate_by_uid_behind_a_closed_directory(open_tmp):
    tmp_path = open_tmp
    closed = tmp_path / "closed"
    (closed / "state").mkdir(parents=True)
    closed.chmod(0o700)
    iso = resolve("auto", euid=0, bwrap=fake_bwrap(tmp_path, False), reach=[closed / "state"])
    assert iso.mode == "none" and f"{closed} is closed to other uids" in iso.why
    assert iso.one_user_only and "a second user is refused" in iso.describe()
    closed.chmod(0o711)
    assert resolve("auto", euid=0, bwrap=fake_bwrap(tmp_path, False),
                   reach=[closed / "state"]).mode == "uid"


@pytest.mark.parametrize(("requested", "euid", "works", "error"), [
    ("uid", 1000, True, "needs root"),
    ("uid+sandbox", 1000, True, "needs root"),
    ("sandbox", 1000, False, "needs a usable bubblewrap"),
    ("uid+sandbox", 0, False, "needs a usable bubblewrap"),
    ("chroot", 0, True, "must be one of"),
])
def test_a_mode_the_machine_cannot_do_is_a_clear_error(tmp_path, requested, euid, works, error):
    with pytest.raises(ConfigurationError, match=error):
        resolve(requested, euid=euid, bwrap=fake_bwrap(tmp_path, works))


def test_single_trust_domain_lifts_the_one_user_rule():
    assert Isolation("none").one_user_only
    assert not Isolation("none", single_trust_domain=True).one_user_only
    assert not Isolation("uid").one_user_only
    assert "several users allowed" in Isolation("none", None, True).describe()


# ------------------------------------------------------------------ the sandbox


def test_the_sandbox_shows_only_what_the_server_needs(tmp_path):
    state, env, work = tmp_path / "state", tmp_path / "state/orchestrator/envs/d1", tmp_path / "w"
    argv = sandbox_argv("bwrap", read_only=[env, "/usr/local", "/usr"], writable=[work],
                        workdir=work, privileged=True, hidden=[state])
    pairs = [(argv[i], argv[i + 1]) for i in range(len(argv) - 1)]
    assert ("--ro-bind", str(env)) in pairs and ("--bind", str(work)) in pairs
    assert "--unshare-pid" in argv and "--unshare-ipc" in argv
    assert "--unshare-user" not in argv  # privileged: the uid switch happens inside
    assert argv[-2:] == ["--chdir", str(work)]
    bound = [argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")]
    assert str(state) not in bound and str(tmp_path) not in bound
    assert "/usr/local" not in bound  # shown by /usr already
    # Parents of bind points inside the sandbox's fresh /tmp are made 0755, not 0700.
    made = [argv[i + 3] for i, a in enumerate(argv) if a == "--perms" and argv[i + 2] == "--dir"]
    assert str(tmp_path) in made and all(argv[argv.index(d) - 2] == "0755" for d in made)
    assert argv[argv.index("--tmpfs") - 1] == "1777"


def test_an_unprivileged_sandbox_cannot_make_user_namespaces(tmp_path):
    argv = sandbox_argv("bwrap", read_only=[], writable=[tmp_path], workdir=tmp_path,
                        privileged=False)
    assert "--unshare-user" in argv and "--disable-userns" in argv


def test_a_read_only_path_holding_the_state_directory_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="holds the private"):
        sandbox_argv("bwrap", read_only=[tmp_path], writable=[], workdir=tmp_path,
                     privileged=True, hidden=[tmp_path / "state"])


def test_unreachable_names_the_closed_parent(open_tmp):
    tmp_path = open_tmp
    (tmp_path / "a/b").mkdir(parents=True)
    (tmp_path / "a").chmod(0o700)
    assert unreachable([tmp_path / "a/b/c"]) == [str(tmp_path / "a")]
    (tmp_path / "a").chmod(0o755)
    assert unreachable([tmp_path / "a/b/c"]) == []


# ------------------------------------------------------------------ uids


def test_each_user_keeps_an_own_uid(tmp_path):
    m = UidMap(tmp_path / "uids.json", "61184-65519")
    alice, bob = m.uid_for("alice"), m.uid_for("bob")
    assert alice != bob and alice[0] == alice[1] and 61184 <= alice[0] <= 65519
    again = UidMap(tmp_path / "uids.json", "61184-65519")  # a restart
    assert again.uid_for("alice") == alice and again.uid_for("bob") == bob
    assert json.loads((tmp_path / "uids.json").read_text()) == {"alice": alice[0], "bob": bob[0]}
    assert oct((tmp_path / "uids.json").stat().st_mode & 0o777) == "0o600"


def test_a_uid_of_an_account_is_never_allocated(tmp_path):
    def account(uid: int) -> bool:
        try:
            return bool(pwd.getpwuid(uid))
        except KeyError:
            return False

    taken = next(u for u in range(1, 70000) if account(u) and not account(u + 1))
    m = UidMap(tmp_path / "uids.json", f"{taken}-{taken + 1}")
    assert m.uid_for("u1") == (taken + 1, taken + 1)  # never the account's
    with pytest.raises(OrchestratorError, match="no free uid left"):
        m.uid_for("u2")


def test_mapped_accounts_and_bad_settings(tmp_path):
    daemon = pwd.getpwnam("daemon")
    assert parse_accounts("sub-1=daemon, sub-2=4242") == {
        "sub-1": (daemon.pw_uid, daemon.pw_gid), "sub-2": (4242, 4242)}
    m = UidMap(tmp_path / "uids.json", accounts="sub-1=daemon")
    assert m.uid_for("sub-1") == (daemon.pw_uid, daemon.pw_gid)
    for bad, msg in (("x=root", "never runs as root"), ("x=0", "never runs as root"),
                     ("x=no-such-account-4711", "no account"), ("justaname", "expected")):
        with pytest.raises(ConfigurationError, match=msg):
            parse_accounts(bad)
    for bad in ("0-10", "10-5", "abc", "5"):
        with pytest.raises(ConfigurationError):
            parse_range(bad)


def test_a_corrupt_uid_table_stops_rather_than_guesses(tmp_path):
    (tmp_path / "uids.json").write_text("{not json")
    with pytest.raises(OrchestratorError, match="cannot read the uid table"):
        UidMap(tmp_path / "uids.json").uid_for("alice")


# ------------------------------------------------------------------ records


def record(tmp_path: Path, **over) -> dict:
    ready = tmp_path / "ready"
    ready.touch()
    r = {"user_id": "alice", "role": "server", "pid": 4242, "start": 1, "uid": 61200,
         "gid": 61200, "isolation": "uid", "broker_url": "tcp://b:1", "secret": "s1",
         "ready_file": str(ready), "interpreter": "/py",
         "env": {"python": "3.11", "requirements": [], "digest": "d1"}}
    r.update(over)
    return r


def why(r: dict, complete: bool = True, uid: tuple[int, int] = (61200, 61200)) -> str | None:
    return distrust(r, isolation="uid", broker_url="tcp://b:1", secret="s1",
                    env_complete=lambda spec, interp: complete and spec.digest == "d1",
                    uid_of=lambda user_id: uid)


def test_who_may_be_adopted(tmp_path):
    assert why(record(tmp_path)) is None
    assert "build cut short" in why(record(tmp_path, role="build"))
    assert "isolation" in why(record(tmp_path, isolation="none"))
    assert "another broker" in why(record(tmp_path, broker_url="tcp://b:2"))
    assert "another broker" in why(record(tmp_path, secret="s2"))
    assert "never registered" in why(record(tmp_path, ready_file=str(tmp_path / "nope")))
    assert "environment is gone" in why(record(tmp_path), complete=False)
    assert "names no environment" in why(record(tmp_path, env=None))
    assert "another uid" in why(record(tmp_path), uid=(61201, 61201))


def test_records_are_private_and_removed_only_for_their_process(tmp_path):
    recs = Records(tmp_path / "servers")
    recs.write("alice", {"pid": 10, "user_id": "alice"})
    assert oct((tmp_path / "servers").stat().st_mode & 0o777) == "0o700"
    assert oct(recs.path("alice").stat().st_mode & 0o777) == "0o600"
    recs.remove("alice", 11)  # a newer server's record stays
    assert recs.load_all() == {"alice": {"pid": 10, "user_id": "alice"}}
    recs.remove("alice", 10)
    assert recs.load_all() == {}
    (tmp_path / "servers" / "bad.json").write_text("{")
    assert recs.load_all() == {} and (tmp_path / "servers" / "bad.json").exists()
    assert recs.load_all(drop_bad=True) == {} and not (tmp_path / "servers/bad.json").exists()


# ------------------------------------------------------------------ one user only


def test_without_isolation_the_first_user_owns_the_stack(tmp_path):
    t = Tenancy(Isolation("none", why="test"), tmp_path / "o", tmp_path / "u")
    t.admit("id-alice", "alice")
    t.admit("id-alice", "alice")
    with pytest.raises(Forbidden, match="serves one user only, and that is alice"):
        t.admit("id-bob", "bob")
    again = Tenancy(Isolation("none", why="test"), tmp_path / "o", tmp_path / "u")
    with pytest.raises(Forbidden):
        again.admit("id-bob", "bob")  # durable: a restart does not reset it
    trusted = Tenancy(Isolation("none", None, True), tmp_path / "o", tmp_path / "u")
    trusted.admit("id-bob", "bob")


def test_a_tenant_gets_private_directories(tmp_path, open_tmp):
    t = Tenancy(Isolation.off(), tmp_path / "o", tmp_path / "u")
    ten = t.tenant("id-alice", "alice")
    assert ten.uid is None and ten.workdir == tmp_path / "u" / "alice"
    for d in (ten.workdir, ten.rundir):
        assert oct(d.stat().st_mode & 0o777) == "0o700"
    assert ten.ready_file == tmp_path / "o" / "run" / "alice" / "ready"
    if os.geteuid() == 0:
        iso = Isolation("uid", why="test")
        t = Tenancy(iso, open_tmp / "o", open_tmp / "u", UidMap(tmp_path / "uids.json"))
        ten = t.tenant("id-alice", "alice")
        assert ten.workdir.stat().st_uid == ten.uid != 0


# ------------------------------------------------------------------ stopped workers


def test_a_worker_stopped_long_enough_is_due():
    states = {1: "T", 2: "S", 3: "t"}
    w = StoppedWatch(10.0, states.get)
    assert w.due(0.0) and w.check([1, 2, 3], 0.0) == []
    assert not w.due(0.5)  # looks every timeout/4, at most every second
    assert w.check([1, 2, 3], 9.9) == []
    assert w.check([1, 2, 3], 10.0) == [1]  # SIGSTOPped; the debugged one (t) is left
    assert w.check([1, 2, 3], 30.0) == []  # reported once, then counted anew
    states[1] = "R"  # continued: its count starts over
    w.check([1], 31.0)
    states[1] = "T"
    assert w.check([1], 32.0) == [] and w.check([1], 42.0) == [1]


def test_no_watch_when_turned_off():
    w = StoppedWatch(0.0, lambda pid: "T")
    assert not w.due(100.0) and w.check([1], 100.0) == []


def test_worker_gone_carries_the_reason():
    msg = p.parse_backend(p.worker_gone(b"w1", -9, "stopped for 10s")[1:])
    assert msg == p.WorkerGone(b"w1", -9, "stopped for 10s")
    assert p.parse_backend(p.worker_gone(b"w1", 0)[1:]) == p.WorkerGone(b"w1", 0, "")
