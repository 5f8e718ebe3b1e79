"""A user's server as a ``batch/v1`` Job, and the Job's state as a zexec phase.

Why a Job (one pod at a time, ``restartPolicy: Never`` in its template) and not a bare
Pod: a bare pod has no controller, so ``kubectl drain`` refuses it without ``--force``,
the cluster autoscaler does not scale its node down, and a pod lost with its node comes
back only at the user's next spawn. A Job's controller makes a new pod for a pod it is
told is retryable, and stays out of the way otherwise:

* ``podFailurePolicy`` rule 1, ``Ignore`` on the ``DisruptionTarget`` pod condition: the
  pod was drained, evicted, preempted or deleted by the taint manager because its node was
  lost (Kubernetes >= 1.26 sets that condition): a new pod, no failure counted. First,
  because rules apply in order and a disrupted server may exit non-zero.
* rule 2, ``Ignore`` on exit 143 of the ``server`` container: the server was stopped by
  SIGTERM (a drain, an eviction, a node's graceful shutdown, a deleted pod), finished its
  calls and exited with ``ZEXEC_SERVER_SIGNAL_EXIT_CODE`` (143, set in the pod): a new
  pod. Exit 0 would make the pod ``Succeeded``, and a Job counts a succeeded pod as done
  whatever its conditions (a failure policy applies to failed pods only), so a drained
  server would end instead of moving to another node;
* rule 3, ``FailJob`` on any other non-zero exit of the ``server`` container: the server
  crashed or could not start: the Job fails with reason ``PodFailurePolicy`` and the
  status says why (the container's exit and log tail, as for the bare pod);
* ``backoffLimit: 0``: any other failure (the install init container, a fatal waiting
  reason) fails the Job at once (``BackoffLimitExceeded``) instead of a crash loop;
* exit 0 is the server's idle shutdown: the pod succeeds, ``completions: 1`` is met, the
  Job is ``Complete`` and stays so (a Deployment would restart it for ever); a server
  lost with its node never exits, its pod fails with ``DisruptionTarget`` and is
  replaced by the Job;
* ``parallelism: 1``; with a ``podFailurePolicy`` the replacement pod is made only once the
  old one is terminal (``podReplacementPolicy: Failed`` is then the default), so a user
  never has two servers of one Job registered at once;
* no ``activeDeadlineSeconds``: a server lives as long as it is used (its idle timeout
  ends it); no ``ttlSecondsAfterFinished``: the finished Job is the record ``status``
  reads (idle or failed, with the reason and log tail); the next spawn deletes it, and the
  namespace reaper deletes it with the namespace;
* the pod template carries ``cluster-autoscaler.kubernetes.io/safe-to-evict: "true"``:
  its emptyDirs (venv, /tmp) would otherwise keep the autoscaler from removing the node,
  and a server is replaceable (the Job makes a new one; the client reconnects).

The pod template is :func:`~.manifests.build_pod`'s pod spec, unchanged (wrapped here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from zexec.adapters.orchestrator_k8s import access
from zexec.adapters.orchestrator_k8s.apicalls import api_errors, raw
from zexec.adapters.orchestrator_k8s.manifests import SIGNAL_EXIT_CODE
from zexec.adapters.orchestrator_k8s.podstatus import PodPhase, pod_phase

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
#: The label older clusters (< 1.27) set; current ones set both.
LEGACY_JOB_NAME_LABEL = "job-name"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
TERMINAL_PHASES = ("Succeeded", "Failed")


def build_job(pod: dict[str, Any], server_container: str = "server") -> dict[str, Any]:
    """The Job running ``pod`` (a :func:`~.manifests.build_pod` result): same name,
    namespace, labels and annotations; the pod's spec is the template's (see the module
    docstring for each field)."""
    meta = pod["metadata"]
    template_meta = {
        "labels": dict(meta.get("labels") or {}),
        "annotations": {**(meta.get("annotations") or {}), SAFE_TO_EVICT: "true"},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
        },
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 0,
            "podFailurePolicy": {
                "rules": [
                    {"action": "Ignore",
                     "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                    {"action": "Ignore",
                     "onExitCodes": {"containerName": server_container,
                                     "operator": "In", "values": [SIGNAL_EXIT_CODE]}},
                    {"action": "FailJob",
                     "onExitCodes": {"containerName": server_container,
                                     "operator": "NotIn", "values": [0, SIGNAL_EXIT_CODE]}},
                ]
            },
            "template": {"metadata": template_meta, "spec": copy.deepcopy(pod["spec"])},
        },
    }


def job_selector(job_name: str) -> str:
    return f"{JOB_NAME_LABEL}={job_name}"


def pods_of(job_name: str, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods of Job ``job_name`` among ``pods`` (filtered here too: an API server's
    label selector is the first filter, not the only one)."""
    out = []
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if job_name in (labels.get(JOB_NAME_LABEL), labels.get(LEGACY_JOB_NAME_LABEL)):
            out.append(pod)
    return out


def _created(pod: dict[str, Any]) -> float:
    value = (pod.get("metadata") or {}).get("creationTimestamp")
    if not value:
        return 0.0
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _ended(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp")) or \
        (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def current_pod(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The Job's pod that says how the server is: the newest one still running (or on its
    way), else the newest one (ties: the later in the list, as listed by name)."""
    if not pods:
        return None
    live = [p for p in pods if not _ended(p)]
    return max(live or pods, key=_created)


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def _ts(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _lost(pod: dict[str, Any]) -> bool:
    """The pod is going because of its node or an eviction: the Job replaces it."""
    status = pod.get("status") or {}
    if status.get("phase") == "Unknown":
        return True
    return any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def job_phase(job: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[PodPhase, str | None]:
    """(the zexec phase of the server Job ``job``, the name of its current pod, whose
    logs explain the phase when the phase names a ``log_container``).

    ====================================  ==============================================
    Job / its current pod                 phase (reason)
    ====================================  ==============================================
    Job being deleted                     terminated (deleted)
    Job Complete (the idle exit)          terminated (idle; evicted: drained, SIGTERM)
    Job Failed                            failed (the failed pod's reason, else the Job's)
    no pod yet                            pending
    pod lost (Unknown, DisruptionTarget,  starting (the Job makes a new pod)
    being deleted)
    otherwise                             the pod's (see :mod:`.podstatus`)
    ====================================  ==============================================
    """
    meta = job.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return PodPhase("terminated", "deleted", _ts(meta["deletionTimestamp"])), None
    if (done := _condition(job, "Complete")) is not None:
        when = _ts((job.get("status") or {}).get("completionTime")) or \
            _ts(done.get("lastTransitionTime"))
        last = current_pod(pods)
        if last is not None and _lost(last):
            # Drained or evicted, and the server exited 0 (an image from before
            # ZEXEC_SERVER_SIGNAL_EXIT_CODE): that ends a Job; the next spawn starts anew.
            cond = [c for c in (last.get("status") or {}).get("conditions") or []
                    if c.get("type") == "DisruptionTarget"]
            why = (cond[0].get("message") or cond[0].get("reason")) if cond else ""
            return PodPhase("terminated", f"evicted ({why or 'node lost'})", when), None
        return PodPhase("terminated", "idle", when), None
    failed = _condition(job, "Failed")
    if failed is not None:
        bad = [p for p in pods if pod_phase(p).phase == "failed" and not _lost(p)]
        pod = max(bad, key=_created) if bad else None
        if pod is not None:
            got = pod_phase(pod)
            return got, pod["metadata"]["name"] if got.log_container else None
        text = failed.get("message") or failed.get("reason") or "the server Job failed"
        return PodPhase("failed", text, _ts(failed.get("lastTransitionTime"))), None
    pod = current_pod(pods)
    if pod is None:
        return PodPhase("pending", "", _ts((job.get("status") or {}).get("startTime"))), None
    if _lost(pod) or (pod.get("metadata") or {}).get("deletionTimestamp"):
        why = pod_phase(pod).reason or "the server pod was deleted"
        why = why.replace("; a spawn replaces it", "")
        return PodPhase("starting", f"{why}; Kubernetes is replacing it"), None
    return pod_phase(pod), pod["metadata"]["name"]  # its logs, when log_container says


# ---------------------------------------------------------------------- API calls


def delete_server(core: Any, batch: Any, ns: str, name: str) -> None:
    """Delete server Job ``name`` and its pods. ``Background``: the garbage collector
    deletes the pods (a Job's own default through the API is to orphan them). A
    namespace made before servers were Jobs names a bare pod: that is deleted."""
    with api_errors(f"deleting job {name}"):
        try:
            raw(batch.delete_namespaced_job, name, ns, propagation_policy="Background")
            return
        except ApiException as e:
            if e.status != 404:
                raise
    with api_errors(f"deleting pod {name}", ok=(404,)):
        raw(core.delete_namespaced_pod, name, ns)


def read_server(core: Any, batch: Any, ns: str, name: str, grant: Callable[[], None],
                may_grant: bool) -> tuple[PodPhase, str | None, dict[str, Any]] | None:
    """(phase, its current pod's name, the Job) of server Job ``name``; None if it is
    gone. The first read may ``grant`` the Deploy API's RoleBinding (see
    :func:`.access.granting`). A namespace from before servers were Jobs names a bare
    pod: read as before (its labels are the server's; it has no job-name)."""

    def job() -> dict[str, Any] | None:
        try:
            return raw(batch.read_namespaced_job, name, ns)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def pods(selector: str) -> list[dict[str, Any]]:
        return raw(core.list_namespaced_pod, ns, label_selector=selector).get("items") or []

    with api_errors(f"reading job {name}"):
        found = access.granting(job, grant, may_grant)
        if found is not None:
            got, log_pod = job_phase(found, pods_of(name, pods(job_selector(name))))
            return got, log_pod, found
        bare = [p for p in pods("app.kubernetes.io/managed-by=zexec")
                if p["metadata"]["name"] == name]
        if bare:
            return pod_phase(bare[0]), name, bare[0]
    return None
