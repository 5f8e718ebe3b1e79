"""The Orchestrator contract, checked the same way on every implementation: the
in-memory fake, the local process orchestrator (stand-in server) and the Kubernetes
orchestrator (kmock emulator)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import pytest
from kmock_support import server_pod
from kubernetes import client
from orch_support import PY, wait_for

from zexec.adapters.orchestrator_memory import InMemoryOrchestrator
from zexec.core.envspec import parse_env_spec
from zexec.core.errors import EnvironmentConflict
from zexec.core.model import PHASES, Resources, UserIdentity
from zexec.core.ports import Orchestrator

pytest_plugins = ["orch_fixtures", "k8s_fixtures"]

A = parse_env_spec([f"python=={PY}"])
B = parse_env_spec([f"python=={PY}", "six"])
BROKEN = parse_env_spec([f"python=={PY}", "zexec-test-no-such-package-4711"])
_ids = itertools.count()


@pytest.fixture(params=["memory", "local", "kubernetes"])
def impl3(request) -> tuple[Orchestrator, Callable[[str], None], Callable]:
    """(orchestrator, make_ready(user_id), force_failing(user)): make_ready brings the
    user's server (the replacement, while one is built) to ready the way that
    implementation gets there; force_failing forces a replacement that fails there."""
    if request.param == "memory":
        orch = InMemoryOrchestrator()

        def memory_fail(u: UserIdentity) -> None:
            orch.ensure(u, B, force=True)
            orch.advance(u.user_id, "failed", "no such package")

        return orch, lambda uid: orch.advance(uid, "ready"), memory_fail
    if request.param == "local":
        orch = request.getfixturevalue("lite")

        def local_ready(uid: str) -> None:
            wait_for(lambda: (s := orch.status(uid)) and s.phase == "ready" and s, what=uid)

        def local_fail(u: UserIdentity) -> None:
            orch.ensure(u, BROKEN, force=True)
            wait_for(lambda: orch.status(u.user_id).phase == "failed", what="build failure")

        return orch, local_ready, local_fail
    orch = request.getfixturevalue("k8s_orch")
    core = client.CoreV1Api(request.getfixturevalue("kube")[1])

    def set_pod(uid: str, status: dict) -> None:  # what the kubelet would report
        ns = f"zexec-u-{uid}"
        ann = core.read_namespace(ns).metadata.annotations
        which = "zexec.io/next-pod" if ann.get("zexec.io/next-pod") else "zexec.io/pod"
        pod = server_pod(core.api_client, ns, which)  # the server Job's current pod
        core.patch_namespaced_pod_status(pod, ns, {"status": status}, _preload_content=False)

    def k8s_ready(uid: str) -> None:
        set_pod(uid, {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})

    def k8s_fail(u: UserIdentity) -> None:
        orch.ensure(u, B, force=True)
        set_pod(u.user_id, {"phase": "Failed", "initContainerStatuses": [
            {"name": "install", "state": {"terminated": {"exitCode": 1}}}]})

    return orch, k8s_ready, k8s_fail


@pytest.fixture
def impl(impl3) -> tuple[Orchestrator, Callable[[str], None]]:
    return impl3[0], impl3[1]


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


def test_other_resources_are_another_server_and_status_says_what_it_got(impl):
    orch, make_ready = impl
    u = user()
    asked = replace(A, resources=Resources(cpus=1, workers=2))
    st = orch.ensure(u, asked)
    assert st.env == asked and st.env.digest == A.digest  # the same install
    make_ready(u.user_id)
    st = orch.status(u.user_id)
    assert st.env == asked and orch.ensure(u, asked).phase == "ready"  # idempotent
    assert (st.resources.cpus, st.resources.workers) == (1.0, 2)
    with pytest.raises(EnvironmentConflict, match="requested site defaults"):
        orch.ensure(u, A)
    replaced = orch.ensure(u, A, force=True)
    assert replaced.env == A and replaced.env.resources == Resources()
    make_ready(u.user_id)
    assert orch.status(u.user_id).env == A
    orch.terminate(u.user_id)


def test_force_builds_beside_the_server_which_serves_until_the_new_one_is_ready(impl):
    orch, make_ready = impl
    u = user()
    orch.ensure(u, A)
    make_ready(u.user_id)
    st = orch.ensure(u, B, force=True)
    assert st.env == B and st.phase != "ready"
    assert (st.previous.phase, st.previous.env) == ("ready", A)  # still serving
    with pytest.raises(EnvironmentConflict):
        orch.ensure(u, A)  # the user asked for B last
    assert orch.ensure(u, B).env == B  # idempotent while it builds
    assert orch.status(u.user_id).previous.env == A
    make_ready(u.user_id)
    st = orch.status(u.user_id)
    assert (st.phase, st.env, st.previous) == ("ready", B, None)  # the old one is gone
    assert [s.env for s in orch.list() if s.user_id == u.user_id] == [B]
    orch.terminate(u.user_id)


def test_a_failed_replacement_leaves_the_old_server_serving(impl3):
    orch, make_ready, force_failing = impl3
    u = user()
    orch.ensure(u, A)
    make_ready(u.user_id)
    force_failing(u)
    st = orch.status(u.user_id)
    assert st.phase == "failed" and "your previous server" in st.reason
    assert "keeps serving" in st.reason
    assert (st.previous.phase, st.previous.env) == ("ready", A)
    back = orch.ensure(u, A)  # asking for the serving environment: no rebuild
    assert (back.phase, back.env, back.previous) == ("ready", A, None)
    assert orch.status(u.user_id).phase == "ready"
    orch.terminate(u.user_id)


def test_cancel_drops_a_replacement_or_a_first_server_on_its_way(impl):
    orch, make_ready = impl
    u = user()
    orch.ensure(u, A)
    make_ready(u.user_id)
    orch.ensure(u, B, force=True)
    assert orch.cancel(u.user_id, A.digest) is False  # not the build under way
    assert orch.cancel(u.user_id, B.digest) is True
    st = orch.status(u.user_id)
    assert (st.phase, st.env, st.previous) == ("ready", A, None)
    assert orch.cancel(u.user_id) is False  # nothing under way: the ready one stays
    assert orch.status(u.user_id).phase == "ready"
    orch.terminate(u.user_id)
    v = user()
    orch.ensure(v, A)
    assert orch.cancel(v.user_id) is True
    assert orch.status(v.user_id) is None


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
