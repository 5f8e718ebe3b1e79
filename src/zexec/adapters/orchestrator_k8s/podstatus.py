"""Map a server Pod (as the API returns it, a camelCase dict) to a zexec phase.

====================================  ==============================================
Pod                                   phase (reason)
====================================  ==============================================
being deleted                         terminated (deleted)
Succeeded (the server's idle exit)    terminated (idle)
Failed, evicted (DiskPressure, ...)   failed (evicted: the kubelet's message)
Failed                                failed (which container, exit code, message)
waiting on a reason that never heals  failed (e.g. InvalidImageName: ...)
Pending, an init container running    installing
Pending, init containers all done     starting
Pending otherwise                     pending (unschedulable/image pull message)
Running and Ready                     ready
Running, not Ready yet                starting
Unknown (node unreachable)            failed (lost: a spawn replaces it)
DisruptionTarget (being evicted...)   failed (lost: a spawn replaces it)
====================================  ==============================================

``failed`` is what makes a spawn replace the server (``replacing.plan_ensure``): a pod
Kubernetes will never bring back (bare, ``restartPolicy: Never``) must not be reported
as still on its way, or every spawn would return the stale status. A server Job's pod
is read through :func:`.jobs.job_phase`, which reports a lost pod of a live Job as
``starting`` instead: the Job's controller brings it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Waiting reasons Kubernetes will not get out of by retrying.
FATAL_WAITING = frozenset(
    {
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImageNeverPull",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class PodPhase:
    phase: str
    reason: str = ""
    #: Epoch seconds the phase began, when the pod says (None: unknown).
    since: float | None = None
    #: Container whose log explains the phase (failed or installing), if any.
    log_container: str | None = None


def _ts(value: Any) -> float | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return {}


def _terminated_text(c: dict[str, Any], term: dict[str, Any]) -> str:
    what = "installing the requirements" if c["_init"] else "the server"
    text = f"{what} failed (container {c.get('name')}: exit code {term.get('exitCode')}"
    if term.get("reason") and term.get("reason") != "Error":
        text += f", {term['reason']}"  # e.g. OOMKilled
    text += ")"
    if term.get("message"):
        text += f": {term['message']}"
    return text


def pod_phase(pod: dict[str, Any]) -> PodPhase:
    """The zexec phase of ``pod`` (see the module table)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return PodPhase("terminated", "deleted", _ts(meta["deletionTimestamp"]))
    k8s_phase = status.get("phase") or "Pending"
    inits = [dict(c, _init=True) for c in status.get("initContainerStatuses") or []]
    mains = [dict(c, _init=False) for c in status.get("containerStatuses") or []]
    states = [(c, c.get("state") or {}) for c in inits + mains]

    if k8s_phase == "Succeeded":
        ends = [_ts((s.get("terminated") or {}).get("finishedAt")) for c, s in states]
        return PodPhase("terminated", "idle", max((e for e in ends if e), default=None))
    if k8s_phase == "Failed" and status.get("reason") == "Evicted":
        text = status.get("message") or "no reason given"
        return PodPhase("failed", f"evicted by Kubernetes: {text}")
    if k8s_phase == "Failed":
        for c, s in states:
            term = s.get("terminated") or {}
            if term and term.get("exitCode", 0) != 0:
                return PodPhase(
                    "failed", _terminated_text(c, term), _ts(term.get("finishedAt")), c["name"]
                )
        text = status.get("message") or status.get("reason") or "the server pod failed"
        return PodPhase("failed", text)
    for c, s in states:
        waiting = s.get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING:
            text = f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
            return PodPhase("failed", f"container {c.get('name')}: {text}")
    if k8s_phase == "Unknown":
        why = status.get("reason") or status.get("message") or "its node stopped reporting"
        return PodPhase("failed", f"server lost (pod status Unknown: {why}); a spawn replaces it")
    disruption = _condition(status, "DisruptionTarget")
    if disruption.get("status") == "True":
        why = disruption.get("message") or disruption.get("reason") or "disrupted"
        return PodPhase("failed", f"server lost ({why}); a spawn replaces it",
                        _ts(disruption.get("lastTransitionTime")))
    if k8s_phase == "Running":
        ready = _condition(status, "Ready")
        if ready.get("status") == "True":
            return PodPhase("ready", "", _ts(ready.get("lastTransitionTime")))
        started = [_ts((s.get("running") or {}).get("startedAt")) for c, s in states]
        return PodPhase("starting", "", max((t for t in started if t), default=None))
    # Pending: scheduling, pulling, the init containers, or the server being created.
    for c, s in states:
        if c["_init"] and s.get("running"):
            return PodPhase("installing", "", _ts(s["running"].get("startedAt")), c["name"])
    if inits and all(
        (s.get("terminated") or {}).get("exitCode") == 0 for c, s in states[: len(inits)]
    ):
        return PodPhase("starting")
    scheduled = _condition(status, "PodScheduled")
    if scheduled.get("status") == "False":
        return PodPhase("pending", scheduled.get("message") or scheduled.get("reason") or "")
    for _c, s in states:
        waiting = s.get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
            return PodPhase("pending", f"{waiting['reason']}: {waiting.get('message', '')}")
    return PodPhase("pending")


def registered_as(info: dict[str, Any] | None, pod: str) -> bool:
    """Whether the broker's registered server for a user (its heartbeat info, or None)
    is pod ``pod``'s (``ZEXEC_SERVER_NAME`` is the pod's name) and not stopping: then a
    started pod is ready, whatever its Ready condition says yet. Another pod's server (a
    replaced one still registered for a heartbeat or two) says nothing of this one."""
    return bool(info) and info.get("name") == pod and info.get("stopping") is not True
