"""A Job controller for tests: what kube-controller-manager's job controller (and the
garbage collector, for Jobs' pods) do, for the fields zexec's server Jobs use, against an
API server that has none (the kmock emulator of the unit/integration tests and of the
e2e cluster, whose test kubelet runs pods only).

Stateless, like the real one: each :meth:`TestJobController.sync` lists Jobs and pods
and acts on what it reads.

* A Job without a live pod (and not finished) gets one, from its template: name
  ``<job>-<5 chars>`` with ``generateName`` (kmock does not generate names, so the name is
  made here), labels ``batch.kubernetes.io/job-name``, ``job-name``,
  ``batch.kubernetes.io/controller-uid``, ``controller-uid``, an ``ownerReferences``
  entry with ``controller: true`` and ``blockOwnerDeletion: true``, and the
  ``batch.kubernetes.io/job-tracking`` finalizer: a pod's end is accounted for before
  the pod may go (the finalizer is removed then).
* A pod ends when its phase is ``Succeeded`` / ``Failed`` or when it is deleted
  (``deletionTimestamp``; the real controller waits for the kubelet to make it terminal,
  the test kubelet does not report on pods being deleted). ``Unknown`` is not an end: a
  lost node's pod stays until the taint manager evicts it.
* An ended pod: succeeded -> ``SuccessCriteriaMet`` then ``Complete``; failed -> the
  ``podFailurePolicy`` rules in order (``onPodConditions`` with ``Ignore``: a new pod,
  nothing counted; ``onExitCodes`` with ``FailJob``: ``FailureTarget`` then ``Failed``,
  reason ``PodFailurePolicy``), else counted in ``failed``, and past ``backoffLimit``
  ``Failed`` with reason ``BackoffLimitExceeded``. A failed Job's live pods are deleted.
* A pod whose controlling Job is gone is deleted (the garbage collector, as for
  ``propagationPolicy: Background``), its finalizer removed.
* ``status`` (``active``, ``ready``, ``failed``, ``succeeded``, ``startTime``,
  ``completionTime``, ``conditions``) is written through the status subresource.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

TRACKING = "batch.kubernetes.io/job-tracking"
TERMINAL = ("Succeeded", "Failed")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _raw(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return json.loads(call(*args, _preload_content=False, **kwargs).data)


def _owner_uid(pod: dict[str, Any]) -> str | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("controller"):
            return ref.get("uid")
    return None


def _finished(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _ended(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp")) or \
        (pod.get("status") or {}).get("phase") in TERMINAL


def _matches(rule: dict[str, Any], pod: dict[str, Any]) -> bool:
    """Does ``rule`` of a podFailurePolicy match failed ``pod``?"""
    status = pod.get("status") or {}
    for want in rule.get("onPodConditions") or []:
        for cond in status.get("conditions") or []:
            if cond.get("type") == want["type"] and \
                    cond.get("status") == want.get("status", "True"):
                return True
    codes = rule.get("onExitCodes")
    if codes:
        for c in (status.get("containerStatuses") or []):
            if codes.get("containerName") not in (None, c.get("name")):
                continue
            term = (c.get("state") or {}).get("terminated")
            if not term:
                continue
            inside = term.get("exitCode", 0) in codes["values"]
            if codes["operator"] == "In" and inside or \
                    codes["operator"] == "NotIn" and not inside and term.get("exitCode"):
                return True
    return False


class TestJobController:
    """Runs :meth:`sync` every ``poll`` seconds in a thread (:meth:`start`) and at once
    after :meth:`wake` (the emulator's stand-in for a watch), or when a test calls it."""

    __test__ = False  # not a pytest class

    def __init__(self, api: client.ApiClient, poll: float = 0.2) -> None:
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.poll = poll
        self.errors: list[str] = []
        #: What it did, in order: ("create"|"delete"|"collect", namespace, pod name).
        self.actions: list[tuple[str, str, str]] = []
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> TestJobController:
        self._thread = threading.Thread(target=self._loop, name="test-jobs", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        """Sync now (something changed in the API server), not at the next poll."""
        self._woken.set()

    def close(self) -> None:
        self._stop.set()
        self._woken.set()
        if self._thread is not None:
            self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._woken.clear()  # before the sync: a change during it syncs again
            try:
                self.sync()
            except Exception as exc:  # keep going: tests see errors via self.errors
                self.errors.append(repr(exc))
            self._woken.wait(self.poll)

    # ------------------------------------------------------------------ one pass

    def sync(self) -> None:
        with self._lock:  # a test's sync() and the thread's must not both make a pod
            jobs = _raw(self.batch.list_job_for_all_namespaces).get("items") or []
            pods = _raw(self.core.list_pod_for_all_namespaces).get("items") or []
            live = {}
            for job in jobs:
                if not job["metadata"].get("deletionTimestamp"):
                    job = self._with_uid(job)
                    live[job["metadata"]["uid"]] = job
            by_job: dict[str, list[dict[str, Any]]] = {}
            for pod in pods:
                owner = _owner_uid(pod)
                if owner is None:
                    continue
                if owner in live:
                    by_job.setdefault(owner, []).append(pod)
                else:
                    self._collect(pod)
            for uid, job in live.items():
                try:
                    self._sync_job(job, by_job.get(uid, []))
                except ApiException as exc:
                    # Its namespace (or the Job) went meanwhile: nothing left to do,
                    # as for the real controller, whose next event is the deletion.
                    if exc.status not in (404, 409):
                        raise

    def _with_uid(self, job: dict[str, Any]) -> dict[str, Any]:
        """The API server gives every object a uid; kmock does not: give it one."""
        meta = job["metadata"]
        if not meta.get("uid"):
            meta["uid"] = str(uuid.uuid4())
            self.batch.patch_namespaced_job(meta["name"], meta["namespace"],
                                            {"metadata": {"uid": meta["uid"]}},
                                            _preload_content=False)
        return job

    def _collect(self, pod: dict[str, Any]) -> None:
        """The garbage collector: a pod whose Job is gone goes too."""
        meta = pod["metadata"]
        try:
            if not meta.get("deletionTimestamp"):
                self.actions.append(("collect", meta["namespace"], meta["name"]))
                self.core.delete_namespaced_pod(meta["name"], meta["namespace"],
                                                _preload_content=False)
            self._release(pod)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _release(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        if TRACKING in (meta.get("finalizers") or []):
            rest = [f for f in meta["finalizers"] if f != TRACKING]
            self.core.patch_namespaced_pod(meta["name"], meta["namespace"],
                                           {"metadata": {"finalizers": rest}},
                                           _preload_content=False)

    def _sync_job(self, job: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        spec, status = job["spec"], copy.deepcopy(job.get("status") or {})
        before = copy.deepcopy(status)
        for pod in pods:
            if not _ended(pod) or TRACKING not in (pod["metadata"].get("finalizers") or []):
                continue
            if not _finished({"status": status}):
                self._account(spec, status, pod)
            self._release(pod)
        active = [p for p in pods if not _ended(p)]
        if _finished({"status": status}):
            if any(c["type"] == "Failed" for c in status.get("conditions") or []):
                for pod in active:  # a failed Job's pods are stopped
                    self.actions.append(("delete", pod["metadata"]["namespace"],
                                         pod["metadata"]["name"]))
                    self.core.delete_namespaced_pod(pod["metadata"]["name"],
                                                    pod["metadata"]["namespace"],
                                                    _preload_content=False)
                active = []
        elif not active:
            active = [self._create_pod(job)]
        status.setdefault("startTime", now())
        status["active"] = len(active)
        status["ready"] = sum(
            1 for p in active if any(c.get("type") == "Ready" and c.get("status") == "True"
                                     for c in (p.get("status") or {}).get("conditions") or []))
        if status != before:
            self.batch.patch_namespaced_job_status(
                job["metadata"]["name"], job["metadata"]["namespace"], {"status": status},
                _preload_content=False)

    def _account(self, spec: dict[str, Any], status: dict[str, Any],
                 pod: dict[str, Any]) -> None:
        """One ended pod, as the job controller counts it."""
        name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        if (pod.get("status") or {}).get("phase") == "Succeeded":
            status["succeeded"] = status.get("succeeded", 0) + 1
            if status["succeeded"] >= spec.get("completions", 1):
                status["completionTime"] = now()
                self._conditions(status, ("SuccessCriteriaMet", "Complete"),
                                 "CompletionsReached", "Reached expected number of succeeded pods")
            return
        rules = (spec.get("podFailurePolicy") or {}).get("rules") or []
        for i, rule in enumerate(rules):
            if not _matches(rule, pod):
                continue
            if rule["action"] == "Ignore":
                return  # not counted: the next sync makes a new pod
            if rule["action"] == "FailJob":
                self._conditions(status, ("FailureTarget", "Failed"), "PodFailurePolicy",
                                 f"Pod {name} failed, matching FailJob rule at index {i}")
                status["failed"] = status.get("failed", 0) + 1
                return
            break  # Count: as with no rule
        status["failed"] = status.get("failed", 0) + 1
        if status["failed"] > spec.get("backoffLimit", 6):
            self._conditions(status, ("FailureTarget", "Failed"), "BackoffLimitExceeded",
                             "Job has reached the specified backoff limit")

    @staticmethod
    def _conditions(status: dict[str, Any], kinds: tuple[str, ...], reason: str,
                    message: str) -> None:
        for kind in kinds:
            status.setdefault("conditions", []).append({
                "type": kind, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now(), "lastTransitionTime": now()})

    def _create_pod(self, job: dict[str, Any]) -> dict[str, Any]:
        meta, template = job["metadata"], job["spec"]["template"]
        uid = meta["uid"]
        labels = {**(template.get("metadata") or {}).get("labels", {}),
                  "batch.kubernetes.io/job-name": meta["name"], "job-name": meta["name"],
                  "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{secrets.token_hex(3)[:5]}",
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                "creationTimestamp": now(),
                "finalizers": [TRACKING],
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": meta["name"],
                    "uid": uid, "controller": True, "blockOwnerDeletion": True}],
            },
            "spec": copy.deepcopy(template["spec"]),
        }
        self.actions.append(("create", meta["namespace"], pod["metadata"]["name"]))
        return _raw(self.core.create_namespaced_pod, meta["namespace"], pod)
