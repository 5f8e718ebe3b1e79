"""The Orchestrator contract, checked the same way on every implementation: the
in-memory fake, the local process orchestrator (stand-in server) and the Kubernetes
orchestrator (kmock emulator)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from kubernetes import client
from orch_support import PY, wait_for

from zexec.adapters.orchestrator_memory import InMemoryOrchestrator
from zexec.core.envspec import parse_env_spec
from zexec.core.errors import EnvironmentConflict
from zexec.core.model import PHASES, UserIdentity
from zexec.core.ports import Orchestrator

pytest_plugins = ["orch_fixtures", "k8s_fixtures"]

A = parse_env_spec([f"python=={PY}"])
B = parse_env_spec([f"python=={PY}", "six"])
_ids = itertools.count()


@pytest.fixture(params=["memory", "local", "kubernetes"])
def impl(request) -> tuple[Orchestrator, Callable[[str], None]]:
    """(orchestrator, make_ready(user_id)): make_ready brings the user's server to
    ready the way that implementation gets there."""
    if request.param == "memory":
        orch = InMemoryOrchestrator()
        return orch, lambda uid: orch.advance(uid, "ready")
    if request.param == "local":
        orch = request.getfixturevalue("lite")

        def local_ready(uid: str) -> None:
            wait_for(lambda: (s := orch.status(uid)) and s.phase == "ready" and s, what=uid)

        return orch, local_ready
    orch = request.getfixturevalue("k8s_orch")
    core = client.CoreV1Api(request.getfixturevalue("kube")[1])

    def k8s_ready(uid: str) -> None:  # what the kubelet would report
        ns = f"zexec-u-{uid}"
        pod = core.read_namespace(ns).metadata.annotations["zexec.io/pod"]
        status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        core.patch_namespaced_pod_status(pod, ns, {"status": status}, _preload_content=False)

    return orch, k8s_ready


def user() -> UserIdentity:
    return UserIdentity(f"contract-{next(_ids)}")


def test_ensure_is_idempotent(impl):
    orch, make_ready = impl
    u = user()
    first = orch.ensure(u, A)
    assert first.user_id == u.user_id and first.env == A and first.phase in PHASES
    assert orch.ensure(u, A).env == A
    make_ready(u.user_id)
    again = orch.ensure(u, A)
    assert (again.phase, again.env) == ("ready", A)
    assert orch.status(u.user_id).phase == "ready"
    assert u.user_id in {s.user_id for s in orch.list()}
    orch.terminate(u.user_id)


def test_other_environment_conflicts_unless_forced(impl):
    orch, make_ready = impl
    u = user()
    orch.ensure(u, A)
    with pytest.raises(EnvironmentConflict, match="force"):
        orch.ensure(u, B)
    make_ready(u.user_id)
    with pytest.raises(EnvironmentConflict):
        orch.ensure(u, B)
    assert orch.status(u.user_id).env == A
    replaced = orch.ensure(u, B, force=True)
    assert replaced.env == B and replaced.phase != "ready"
    assert orch.status(u.user_id).env == B
    make_ready(u.user_id)
    assert orch.status(u.user_id).phase == "ready"
    orch.terminate(u.user_id)


def test_terminate_then_nothing(impl):
    orch, _ = impl
    u = user()
    assert orch.status(u.user_id) is None
    assert orch.terminate(u.user_id) is False
    orch.ensure(u, A)
    assert orch.terminate(u.user_id) is True
    assert orch.terminate(u.user_id) is False
    assert orch.status(u.user_id) is None
    assert u.user_id not in {s.user_id for s in orch.list()}
