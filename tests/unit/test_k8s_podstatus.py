"""pod_phase: how a server Pod's status maps to zexec phases."""

from __future__ import annotations

import pytest

from zexec.adapters.orchestrator_k8s.podstatus import pod_phase

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T10:00:05Z"


def pod(phase=None, inits=(), mains=(), conditions=(), **meta):
    status = {"phase": phase} if phase else {}
    if inits:
        status["initContainerStatuses"] = [{"name": n, "state": s} for n, s in inits]
    if mains:
        status["containerStatuses"] = [{"name": n, "state": s} for n, s in mains]
    if conditions:
        status["conditions"] = list(conditions)
    return {"metadata": meta, "status": status}


DONE = {"terminated": {"exitCode": 0, "finishedAt": T0}}
RUNNING = {"running": {"startedAt": T0}}
WAITING = {"waiting": {"reason": "PodInitializing"}}


@pytest.mark.parametrize(
    ("p", "phase", "reason_part", "container"),
    [
        (pod(), "pending", "", None),
        (pod("Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                     "message": "0/3 nodes: insufficient nvidia.com/gpu"}]),
         "pending", "insufficient nvidia.com/gpu", None),
        (pod("Pending", inits=[("venv", {"waiting": {"reason": "ImagePullBackOff",
                                                     "message": "back-off"}})]),
         "pending", "ImagePullBackOff", None),
        (pod("Pending", inits=[("venv", RUNNING), ("install", WAITING)]),
         "installing", "", "venv"),
        (pod("Pending", inits=[("venv", DONE), ("install", RUNNING)]),
         "installing", "", "install"),
        (pod("Pending", inits=[("venv", DONE), ("install", DONE)],
             mains=[("server", {"waiting": {"reason": "ContainerCreating"}})]),
         "starting", "", None),
        (pod("Running", mains=[("server", RUNNING)],
             conditions=[{"type": "Ready", "status": "False"}]), "starting", "", None),
        (pod("Running", mains=[("server", RUNNING)],
             conditions=[{"type": "Ready", "status": "True", "lastTransitionTime": T1}]),
         "ready", "", None),
        (pod("Succeeded", mains=[("server", DONE)]), "terminated", "idle", None),
        (pod("Failed", inits=[("venv", DONE), ("install", {"terminated": {
            "exitCode": 1, "reason": "Error", "finishedAt": T1}})]),
         "failed", "installing the requirements failed (container install: exit code 1)",
         "install"),
        (pod("Failed", mains=[("server", {"terminated": {"exitCode": 137,
                                                         "reason": "OOMKilled"}})]),
         "failed", "the server failed (container server: exit code 137, OOMKilled)", "server"),
        ({"status": {"phase": "Failed", "reason": "Evicted"}}, "failed", "evicted by Kubernetes",
         None),
        # Evicted for disk: the kubelet's message, not the killed container's exit code.
        ({"status": {"phase": "Failed", "reason": "Evicted",
                     "message": "The node was low on resource: ephemeral-storage.",
                     "containerStatuses": [{"name": "server", "state": {"terminated": {
                         "exitCode": 137}}}]}},
         "failed", "evicted by Kubernetes: The node was low on resource: ephemeral-storage", None),
        (pod("Pending", mains=[("server", {"waiting": {"reason": "InvalidImageName",
                                                       "message": "bad ref"}})]),
         "failed", "InvalidImageName: bad ref", None),
        (pod("Running", deletionTimestamp=T1), "terminated", "deleted", None),
        # A lost node: a bare pod never comes back, so it is replaceable (failed).
        (pod("Unknown"), "failed", "server lost (pod status Unknown", None),
        ({"status": {"phase": "Unknown", "reason": "NodeLost"}}, "failed", "NodeLost", None),
        (pod("Running", mains=[("server", RUNNING)], conditions=[
            {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
             "message": "Taint manager: deleting due to NoExecute taint"},
            {"type": "Ready", "status": "True", "lastTransitionTime": T1}]),
         "failed", "server lost (Taint manager", None),
    ],
)  # fmt: skip
def test_mapping(p, phase, reason_part, container):
    got = pod_phase(p)
    assert got.phase == phase
    assert reason_part in got.reason
    assert got.log_container == container


def test_since_comes_from_the_pod():
    ready = pod("Running", conditions=[{"type": "Ready", "status": "True",
                                        "lastTransitionTime": T1}])  # fmt: skip
    assert pod_phase(ready).since == pod_phase(ready).since == 1714557605.0
    assert pod_phase(pod()).since is None


@pytest.mark.parametrize("status", [
    {"phase": "Unknown"},
    {"phase": "Failed", "reason": "Evicted", "message": "DiskPressure"},
])
def test_a_lost_or_evicted_server_is_replaced_by_the_next_spawn(status):
    from zexec.core import replacing
    from zexec.core.envspec import parse_env_spec
    from zexec.core.model import ServerStatus

    spec = parse_env_spec(["python==3.11"])
    got = pod_phase({"metadata": {}, "status": status})
    current = ServerStatus("alice", got.phase, spec, got.reason)
    assert replacing.plan_ensure(current, None, spec, force=False) == "restart"
