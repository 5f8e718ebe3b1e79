"""LocalOrchestrator with real uv-built environments and real processes; the server is
a stand-in script (see orch_support.STANDIN_SERVER) until the real one lands."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from orch_support import FAKE_UV, OFF, PY, SECRET, wait_for, write_script

from tests.helpers.procs import alive
from zexec.adapters.orchestrator_local import LocalOrchestrator
from zexec.core.envspec import parse_env_spec
from zexec.core.errors import InvalidEnvironment
from zexec.core.model import UserIdentity
from zexec.core.protocol import server_credential

pytest_plugins = ["orch_fixtures"]

SIX = parse_env_spec([f"python=={PY}", "six"])
BARE = parse_env_spec([f"python=={PY}"])


def phase_is(orch, user_id: str, *phases: str):
    st = orch.status(user_id)
    return st if st is not None and st.phase in phases else None


def report(reports: Path, user_id: str) -> dict:
    return json.loads(
        wait_for(
            lambda: (
                (reports / f"{user_id}.json").exists() and (reports / f"{user_id}.json").read_text()
            ),
            what=user_id,
        )
    )


@pytest.fixture(scope="session")
def full(tmp_path_factory, standin, pythons):
    """The one full build of the run: six + this zexec source tree, for user alice."""
    orch = LocalOrchestrator(
        tmp_path_factory.mktemp("full-state"), "tcp://127.0.0.1:5560", SECRET,
        available_pythons=pythons, server_workers=3, server_command=standin[0], grace=0.5,
        isolation=OFF,
    )  # fmt: skip
    st = orch.ensure(UserIdentity("alice"), SIX)
    assert st.phase == "pending" and st.env == SIX
    ready = wait_for(lambda: phase_is(orch, "alice", "ready", "failed"), timeout=600)
    assert ready.phase == "ready", ready
    yield orch
    orch.close()


def test_server_runs_in_the_built_env_with_its_settings(full, standin, monkeypatch):
    rep = report(standin[1], "alice")
    env_dir = full.state_dir / "envs" / SIX.digest
    assert Path(rep["prefix"]) == env_dir
    assert rep["six"] is True
    # zexec comes from the wheel of this very installation, not an index or the checkout
    installed = Path(rep["zexec"])
    assert installed.is_relative_to(env_dir)
    import zexec

    assert installed.read_bytes() == Path(zexec.__file__).read_bytes()
    assert "zexec-wheels" in full.log_path("alice").read_text()
    assert rep["ZEXEC_SERVER_USER_ID"] == "alice"
    # The credential comes over an inherited pipe, never in the environment.
    assert rep["credential"] == server_credential(SECRET, "alice")
    assert "ZEXEC_SERVER_CREDENTIAL" not in rep
    assert rep["ZEXEC_SERVER_BROKER_URL"] == "tcp://127.0.0.1:5560"
    assert rep["ZEXEC_SERVER_WORKERS"] == "3"
    assert Path(rep["ZEXEC_SERVER_READY_FILE"]).exists()
    assert (env_dir / "zexec-requirements.txt").read_text() == "six\n"
    assert full.log_path("alice").read_text().count("uv pip install") == 1


def test_second_user_reuses_the_env_and_secrets_do_not_leak(full, standin, monkeypatch):
    marker = full.state_dir / "envs" / SIX.digest / ".zexec-complete"
    before = marker.stat().st_mtime_ns
    monkeypatch.setenv("ZEXEC_BROKER_SERVER_SECRET", "must-not-leak")
    full.ensure(UserIdentity("bob@example.org"), SIX)
    wait_for(lambda: phase_is(full, "bob@example.org", "ready"), what="bob ready")
    rep = report(standin[1], "bob@example.org")
    assert "ZEXEC_BROKER_SERVER_SECRET" not in rep
    assert marker.stat().st_mtime_ns == before
    assert "uv" not in full.log_path("bob@example.org").read_text()
    assert full.terminate("bob@example.org") is True
    assert not alive(rep["pid"]) and not alive(rep["worker"])


def test_unknown_python_lists_the_available_ones(lite):
    with pytest.raises(InvalidEnvironment, match=f"python==2.9 is not available.*{PY}"):
        lite.ensure(UserIdentity("u-py"), parse_env_spec(["python==2.9"]))
    assert lite.status("u-py") is None


def test_install_failure_shows_the_reason_and_installer_output(lite):
    bad = parse_env_spec([f"python=={PY}", "zexec-test-no-such-package-4711"])
    lite.ensure(UserIdentity("u-bad"), bad)
    st = wait_for(lambda: phase_is(lite, "u-bad", "failed"), what="failed")
    assert "building the environment failed: uv pip install exited with status" in st.reason
    assert any("zexec-test-no-such-package-4711" in line for line in st.log_tail)
    assert not (lite.envs.path(bad) / ".zexec-complete").exists()


def test_crashing_server_fails_with_log_tail(lite):
    lite.ensure(UserIdentity("crash-1"), BARE)
    st = wait_for(lambda: phase_is(lite, "crash-1", "failed"), what="failed")
    assert st.reason == "server exited with status 3"
    assert any("boom" in line for line in st.log_tail)


def test_idle_exit_shows_terminated_idle_and_ensure_starts_again(lite):
    lite.ensure(UserIdentity("idle-1"), BARE)
    st = wait_for(lambda: phase_is(lite, "idle-1", "terminated"), what="idle exit")
    assert st.reason == "idle"
    # A terminated server is no conflict: a new environment simply starts.
    assert lite.ensure(UserIdentity("idle-1"), SIX).phase in ("pending", "installing")
    wait_for(lambda: phase_is(lite, "idle-1", "ready", "terminated"), what="restart")


def test_terminate_kills_a_server_that_ignores_sigterm(lite, standin):
    lite.ensure(UserIdentity("stubborn-1"), BARE)
    wait_for(lambda: phase_is(lite, "stubborn-1", "ready"), what="ready")
    rep = report(standin[1], "stubborn-1")
    assert lite.terminate("stubborn-1") is True
    assert not alive(rep["pid"]) and not alive(rep["worker"])
    assert lite.terminate("stubborn-1") is False


def test_terminate_while_starting(lite, standin):
    lite.ensure(UserIdentity("slow-1"), BARE)
    rep = report(standin[1], "slow-1")
    assert lite.status("slow-1").phase == "starting"
    assert lite.terminate("slow-1") is True
    assert not alive(rep["pid"]) and lite.status("slow-1") is None


def test_terminate_while_installing_kills_the_installer(tmp_path, standin, pythons):
    uv = write_script(tmp_path / "uv", FAKE_UV, sys.executable)
    orch = LocalOrchestrator(
        tmp_path / "state", "tcp://127.0.0.1:5560", SECRET, available_pythons=pythons,
        uv=str(uv), server_command=standin[0], zexec_args=[], grace=0.5,
        isolation=OFF,
    )  # fmt: skip
    orch.ensure(UserIdentity("u-inst"), BARE)
    # The installer's output shows up live while installing.
    wait_for(
        lambda: (
            (s := phase_is(orch, "u-inst", "installing"))
            and any("fake uv" in line for line in s.log_tail)
        ),
        what="installer output",
    )
    proc = orch._servers["u-inst"].proc
    assert orch.terminate("u-inst") is True
    assert proc.poll() is not None and orch.status("u-inst") is None


def test_concurrent_ensures_start_one_server(lite):
    user = UserIdentity("u-many")
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(lite.ensure(user, BARE)))
               for _ in range(8)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and {r.env.digest for r in results} == {BARE.digest}
    wait_for(lambda: phase_is(lite, "u-many", "ready"), what="ready")
    assert lite.log_path("u-many").read_text().count("server.py") == 1


def restarted(orch: LocalOrchestrator, **kw) -> LocalOrchestrator:
    """A new orchestrator on the same state directory, as a Deploy API restarted after a
    crash builds it (the old one is simply abandoned, as a killed process would be)."""
    return LocalOrchestrator(
        orch.state_dir, orch.broker_backend_url, SECRET, available_pythons=orch.pythons(),
        server_command=orch.server_command, zexec_args=orch.envs.zexec_args, grace=0.5,
        isolation=OFF, uv=kw.pop("uv", orch.uv), **kw,
    )


def test_a_restarted_orchestrator_adopts_the_servers_it_can_trust(lite, standin):
    lite.ensure(UserIdentity("adopt-1"), BARE)
    wait_for(lambda: phase_is(lite, "adopt-1", "ready"), what="ready")
    rep = report(standin[1], "adopt-1")
    record = json.loads((lite.state_dir / "servers" / "adopt-1.json").read_text())
    assert record["pid"] == rep["pid"] and record["role"] == "server"
    assert record["env"]["digest"] == BARE.digest and record["start"]

    again = restarted(lite)
    st = again.status("adopt-1")
    assert st is not None and st.phase == "ready" and st.env == BARE
    assert alive(rep["pid"])  # the same process, not a new one
    assert again.terminate("adopt-1") is True
    assert not alive(rep["pid"]) and not alive(rep["worker"])
    assert not (lite.state_dir / "servers" / "adopt-1.json").exists()


def test_a_restarted_orchestrator_stops_what_it_cannot_trust(lite, standin):
    lite.ensure(UserIdentity("distrust-1"), BARE)
    wait_for(lambda: phase_is(lite, "distrust-1", "ready"), what="ready")
    rep = report(standin[1], "distrust-1")
    # Started for another broker address: its registration is worth nothing now.
    other = LocalOrchestrator(
        lite.state_dir, "tcp://127.0.0.1:5999", SECRET, available_pythons=lite.pythons(),
        server_command=lite.server_command, zexec_args=[], grace=0.5, isolation=OFF,
    )
    assert other.status("distrust-1") is None
    assert not alive(rep["pid"]) and not alive(rep["worker"])  # no orphan left
    assert not (lite.state_dir / "servers" / "distrust-1.json").exists()


def test_a_restarted_orchestrator_stops_a_build_cut_short(tmp_path, standin, pythons):
    uv = write_script(tmp_path / "uv", FAKE_UV, sys.executable)
    orch = LocalOrchestrator(
        tmp_path / "state", "tcp://127.0.0.1:5560", SECRET, available_pythons=pythons,
        uv=str(uv), server_command=standin[0], zexec_args=[], grace=0.5, isolation=OFF,
    )  # fmt: skip
    orch.ensure(UserIdentity("u-cut"), BARE)
    wait_for(lambda: phase_is(orch, "u-cut", "installing"), what="installing")
    installer = wait_for(lambda: orch._servers["u-cut"].proc, what="installer")
    again = restarted(orch, uv=str(uv))
    assert installer.wait(10) is not None  # stopped by the new orchestrator
    assert again.status("u-cut") is None
    assert not (orch.state_dir / "servers" / "u-cut.json").exists()
