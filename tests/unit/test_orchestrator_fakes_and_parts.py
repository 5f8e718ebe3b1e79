"""The in-memory orchestrator's test helpers and the local orchestrator's pure parts."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from zexec.adapters.orchestrator_local import discover_pythons, file_key
from zexec.adapters.orchestrator_local.procs import describe_exit, tail
from zexec.adapters.orchestrator_memory import InMemoryOrchestrator
from zexec.core.envspec import parse_env_spec
from zexec.core.model import UserIdentity

SPEC = parse_env_spec(["python==3.11"])


def test_memory_fake_records_and_advances():
    now = iter(range(100, 200))
    orch = InMemoryOrchestrator(clock=lambda: next(now))
    st = orch.ensure(UserIdentity("alice"), SPEC)
    assert (st.phase, st.since) == ("pending", 100)
    failed = orch.advance("alice", "failed", "boom", ["last line"])
    assert (failed.phase, failed.reason, failed.log_tail, failed.env) == (
        "failed", "boom", ("last line",), SPEC,
    )  # fmt: skip
    assert orch.servers["alice"] == failed
    assert orch.calls == [("ensure", "alice", (SPEC.digest, False))]
    with pytest.raises(ValueError, match="unknown phase"):
        orch.advance("alice", "running")
    assert InMemoryOrchestrator(initial_phase="ready").ensure(UserIdentity("b"), SPEC).phase == (
        "ready"
    )


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [("alice", "alice"), ("bob@example.org", "bob@example.org"), ("../x", None), ("a/b", None)],
)
def test_file_key_is_safe_and_distinct(user_id, expected):
    key = file_key(user_id)
    assert "/" not in key and not key.startswith(".")
    if expected is not None:
        assert key == expected
    else:
        assert key != user_id and len(key.rsplit("-", 1)[1]) == 8


def test_tail_and_exit_descriptions(tmp_path):
    log = tmp_path / "x.log"
    assert tail(log) == ()
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "\n\n")
    assert tail(log, lines=3) == ("line 97", "line 98", "line 99")
    assert tail(log, lines=5, max_bytes=30)[-1] == "line 99"
    assert describe_exit(3) == "exited with status 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


def test_discovery_runs_candidates_and_skips_broken_ones(tmp_path, monkeypatch):
    fake = tmp_path / "python3.99"
    fake.write_text("#!/bin/sh\necho 3.99\necho /opt/fake/python3.99\n")
    broken = tmp_path / "python3.98"
    broken.write_text("#!/bin/sh\necho 'pyenv: python3.98: command not found' >&2\nexit 127\n")
    for f in (fake, broken):
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = discover_pythons(uv=None)
    assert found["3.99"] == "/opt/fake/python3.99"
    assert "3.98" not in found
    assert "{}.{}".format(*sys.version_info[:2]) in found
