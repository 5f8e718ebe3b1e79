"""The server-lifecycle rules of zexec.core.replacing, on their own (no orchestrator)."""

from __future__ import annotations

import pytest

from zexec.core import replacing as r
from zexec.core.errors import EnvironmentConflict
from zexec.core.model import EnvSpec, ServerStatus

A = EnvSpec("3.11", ("numpy",), "a" * 64)
B = EnvSpec("3.11", ("pandas",), "b" * 64)


def st(phase: str, env: EnvSpec = A) -> ServerStatus:
    return ServerStatus("alice", phase, env)


@pytest.mark.parametrize("phase", sorted(r.TERMINAL))
def test_a_terminal_server_is_not_live_and_is_restarted(phase):
    assert not r.live(st(phase))
    assert r.plan_ensure(st(phase, B), None, A, force=False) == "restart"
    assert r.spawn_outcome(st(phase), force=False) == "created"


def test_same_digest_keeps_the_server_whatever_its_progress():
    assert r.plan_ensure(st("installing"), None, A, force=False) == "keep-current"
    assert r.plan_ensure(st("ready", B), st("installing"), A, force=False) == "keep-next"
    # A failed replacement, asked for the current environment again: the user is back.
    assert r.plan_ensure(st("ready"), st("failed", B), A, force=False) == "keep-current"


def test_another_digest_is_a_conflict_unless_forced():
    assert r.plan_ensure(st("ready"), None, B, force=False) == "conflict"
    assert r.plan_ensure(st("ready"), None, B, force=True) == "replace-beside"
    assert r.plan_ensure(st("installing"), None, B, force=True) == "restart"


def test_the_conflict_names_the_environment_the_user_asked_for_last():
    err = r.conflict("alice", st("ready"), st("installing", B), EnvSpec("3.12", (), "c" * 64))
    assert isinstance(err, EnvironmentConflict)
    assert str(err) == r.conflict_message("alice", B, EnvSpec("3.12", (), "c" * 64))
    assert "digest bbbbbbbbbbbb, requested cccccccccccc" in str(err)
    assert "force=true" in str(err)
    assert "digest unknown" in r.conflict_message("alice", None, A)


def test_spawn_outcome():
    assert r.spawn_outcome(None, force=True) == "created"
    assert r.spawn_outcome(st("ready"), force=False) == "unchanged"
    assert r.spawn_outcome(st("starting"), force=True) == "replaced"


def test_cancel_stops_a_build_under_way_only():
    assert r.plan_cancel(st("ready"), st("installing", B), None) == "next"
    assert r.plan_cancel(st("ready"), st("installing", B), A.digest) is None
    assert r.plan_cancel(st("pending"), None, A.digest) == "current"
    assert r.plan_cancel(st("ready"), None, None) is None
