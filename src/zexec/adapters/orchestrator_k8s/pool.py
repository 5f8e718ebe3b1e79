"""The warm pool: spare server pods of the site's default environment, adopted by spawns.

Pool pods run in their own namespace (``ZEXEC_K8S_POOL_NAMESPACE``, made by the chart
with a NetworkPolicy: egress to the broker, DNS and the Deploy API only), started with
neither a user nor a credential: the server builds its environment, starts its first
worker, then asks the Deploy API (``POST {prefix}/pool/bind``, a long poll) which user
adopted it, proving itself with a key only that pod has (:func:`.pool_rules.pool_key`
of its name, in its own Secret). Pull, not push: user pods accept no ingress.

A spawn of the pool's environment (no force, no server being replaced) *claims* a
waiting pod: one patch carrying the pod's ``resourceVersion`` as precondition (of two
Deploy API replicas claiming one pod, the API server lets exactly one through; the
other tries the next pod), which also relabels it for the user. The user namespace
then names it (``zexec.io/pod: <pool namespace>/<pod>``), and ``status``, ``terminate``,
the idle exit and the reaper treat it as any server of that user. The pod's next
binding request (on whichever replica holds it) gets the user id and the credential,
computed then from the broker secret (never stored in the API), and marks the pod
bound (precondition again): it never gets a second binding.

A top-up thread per replica keeps ``pool_size`` spare pods (every few seconds, and at
once when an adopted server says it registered or a spawn found no spare): it creates
the missing ones, deletes spares beyond the size (replicas topping up at once may overshoot;
deletes carry the resourceVersion, so a pod claimed meanwhile is kept), pods of an old
environment, ended ones, and adopted pods no user namespace names any more.
"""

from __future__ import annotations

import base64
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from zexec.adapters.orchestrator_k8s import images
from zexec.adapters.orchestrator_k8s import manifests as m
from zexec.adapters.orchestrator_k8s import pool_rules as rules
from zexec.adapters.orchestrator_k8s.apicalls import api_errors, raw
from zexec.core.envspec import parse_env_spec
from zexec.core.errors import ConfigurationError, OrchestratorError
from zexec.core.model import EnvSpec, UserIdentity
from zexec.core.protocol import server_credential
from zexec.settings import KubernetesSettings

if TYPE_CHECKING:
    from zexec.adapters.orchestrator_k8s.orchestrator import KubernetesOrchestrator

log = logging.getLogger(__name__)

def pool_spec(settings: KubernetesSettings) -> EnvSpec:
    """The pool's environment: ``pool_requirements`` on ``pool_python`` (default: the
    Deploy API's own Python, the version its image, and the site's default, has)."""
    reqs = [r.strip() for r in settings.pool_requirements.split(",") if r.strip()]
    python = settings.pool_python or "{}.{}".format(*sys.version_info[:2])
    return parse_env_spec([*reqs, f"python=={python}"])


class WarmPool:
    """The warm pool of ``orch`` (see the module doc); every state is on the pods. With
    ``pool_size`` 0 it does nothing (adopts nothing, starts no thread)."""

    def __init__(self, orch: KubernetesOrchestrator,
                 clock: Callable[[], float] = time.time) -> None:
        s = orch.settings
        if s.pool_size > 0 and not s.pool_deploy_url:
            raise ConfigurationError("ZEXEC_K8S_POOL_SIZE > 0 needs ZEXEC_K8S_POOL_DEPLOY_URL: "
                                     "where the pool pods reach the Deploy API")
        self.orch = orch
        self.core = orch.core
        self.size = s.pool_size
        self.namespace = s.pool_namespace
        self.spec = pool_spec(s)
        self.clock = clock
        self._wake = threading.Event()
        #: Binding requests waiting in this process, by pod: a claim here wakes its
        #: pod's at once (another replica's claim is seen at the next look).
        self._waiting: dict[str, threading.Event] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ adoption

    def adopt(self, user: UserIdentity, spec: EnvSpec, ns: str, key: str) -> str | None:
        """Claim a waiting pod for ``user`` and name it in namespace ``ns``; its reference
        (``<pool namespace>/<pod>``), or None when none fits (then the caller creates
        the user's own pod)."""
        if self.size <= 0 or spec.digest != self.spec.digest:
            return None
        # A site's per-user pod overrides (node selectors, GPUs ...) cannot be on a pod
        # started before its user was known: such users get their own pod.
        if any(self.orch.pm.hook.zexec_server_pod_overrides(env=spec, user=user)):
            return None
        ref = self._claim(user, spec, ns, key)
        if ref is None:
            self._wake.set()  # none left: top up now
        # Else the replacement spare starts once the adopted server says it registered
        # (:meth:`registered`, or the next periodic sweep): its start (image, imports,
        # install) does not compete with the spawn its user is waiting for.
        return ref

    def _claim(self, user: UserIdentity, spec: EnvSpec, ns: str, key: str) -> str | None:
        for pod in rules.adoptable(self._list(), spec.digest):
            meta = pod["metadata"]
            name = meta["name"]
            patch = {"metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "labels": {**m.server_labels(key, spec), rules.LABEL_POOL: "true"},
                "annotations": {rules.ANN_CLAIMED: user.user_id, m.ANN_USER_ID: user.user_id,
                                rules.ANN_OWNER_NS: ns, m.ANN_CREATED: f"{self.clock():.3f}"},
            }}
            try:
                raw(self.core.patch_namespaced_pod, name, self.namespace, patch)
            except ApiException as e:
                if e.status in (404, 409):  # claimed or deleted by someone else: next one
                    continue
                raise OrchestratorError(f"claiming pool pod {name}: {e.status} {e.reason}") \
                    from e
            ref = f"{self.namespace}/{name}"
            with api_errors(f"updating namespace {ns}"):
                raw(self.core.patch_namespace, ns,
                    {"metadata": {"annotations": {m.ANN_POD: ref}}})
            log.info("warm pool: %s adopted by %s", name, user.user_id)
            with self._guard:
                woken = self._waiting.get(name)
            if woken is not None:
                woken.set()
            return ref
        return None

    def release(self, namespace: dict[str, Any]) -> None:
        """Delete the adopted pods user namespace ``namespace`` names (it is being
        terminated: its own pods go with it, these live in the pool namespace)."""
        ann = namespace["metadata"].get("annotations") or {}
        for ref in (ann.get(m.ANN_POD), ann.get(m.ANN_NEXT_POD)):
            where, name = rules.locate(ref or "", "")
            if where == self.namespace and name:
                self._delete(name)

    def read_adopted(self, ref: str) -> tuple[Any, str, dict[str, Any]] | None:
        """(phase, the pod to read logs of, the pod) of the adopted pod a user namespace
        names as ``ref`` (``<pool namespace>/<name>``); None once it is gone."""
        pod = self._read(rules.locate(ref, "")[1])
        return None if pod is None else (rules.server_phase(pod), pod["metadata"]["name"], pod)

    def delete_adopted(self, ref: str) -> None:
        self._delete(rules.locate(ref, "")[1])

    # ------------------------------------------------------------------ binding

    def bind(self, pod: str, key: str) -> tuple[str, str] | None:
        """See :class:`zexec.core.ports.PoolBinder`."""
        if not rules.check_pool_key(self.orch._secret, pod, key):
            raise PermissionError("wrong key for this pool pod")
        for _ in range(3):
            found = self._read(pod)
            if found is not None and rules.LABEL_POOL not in \
                    (found["metadata"].get("labels") or {}):
                found = None
            what, arg = rules.binding(found)
            if what == "refuse":
                raise PermissionError(arg)
            if what == "wait":
                return None
            assert found is not None
            if what == "announce":  # its environment is built: adoptable from now on
                with api_errors(f"marking pool pod {pod} waiting", ok=(404,)):
                    raw(self.core.patch_namespaced_pod, pod, self.namespace, {"metadata": {
                        "annotations": {rules.ANN_WAITING: f"{self.clock():.3f}"}}})
                return None
            try:
                raw(self.core.patch_namespaced_pod, pod, self.namespace, {"metadata": {
                    "resourceVersion": found["metadata"].get("resourceVersion"),
                    "annotations": {rules.ANN_BOUND: f"{self.clock():.3f}"}}})
            except ApiException as e:
                if e.status == 409:  # changed meanwhile: decide again on what it is now
                    continue
                raise OrchestratorError(f"binding pool pod {pod}: {e.status} {e.reason}") \
                    from e
            log.info("warm pool: %s bound to %s", pod, arg)
            return arg, server_credential(self.orch._secret, arg)
        return None

    def wait(self, pod: str, timeout: float) -> None:
        """See :class:`zexec.core.ports.PoolBinder`."""
        event = threading.Event()
        with self._guard:
            self._waiting[pod] = event
        try:
            event.wait(timeout)
        finally:
            with self._guard:
                if self._waiting.get(pod) is event:
                    del self._waiting[pod]

    def registered(self, pod: str, key: str) -> None:
        """See :class:`zexec.core.ports.PoolBinder`."""
        if not rules.check_pool_key(self.orch._secret, pod, key):
            raise PermissionError("wrong key for this pool pod")
        found = self._read(pod)
        if found is None or not (found["metadata"].get("annotations") or {}).get(
                rules.ANN_BOUND):
            raise PermissionError("not a bound pool pod")
        with api_errors(f"marking pool pod {pod} registered", ok=(404,)):
            raw(self.core.patch_namespaced_pod, pod, self.namespace, {"metadata": {
                "annotations": {rules.ANN_REGISTERED: f"{self.clock():.3f}"}}})
        self._wake.set()  # it serves its user: start its replacement spare now

    # ------------------------------------------------------------------ top-up

    def start(self, interval: float = 5.0) -> WarmPool:
        """Top up every ``interval`` seconds, and at once after each adoption, in a
        daemon thread until :meth:`close` (once; nothing with ``pool_size`` 0)."""
        if self.size <= 0 or self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, args=(interval,),
                                        name="zexec-warm-pool", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.sweep()
            except Exception:  # the next sweep may well succeed: never let the thread die
                log.exception("warm pool: top-up failed")
            self._wake.wait(interval)

    def sweep(self) -> tuple[list[str], list[str]]:
        """One top-up pass; (pods created, pods deleted)."""
        pods = self._list()
        missing, drop = rules.top_up(pods, self.size, self.spec.digest)
        now = self.clock()
        for pod in pods:
            owner = (pod["metadata"].get("annotations") or {}).get(rules.ANN_OWNER_NS, "")
            if rules.ANN_CLAIMED in (pod["metadata"].get("annotations") or {}) and \
                    rules.orphaned(pod, self.orch._read_namespace(owner) if owner else None,
                                   self.namespace, now):
                drop.append(pod["metadata"]["name"])
        versions = {p["metadata"]["name"]: p["metadata"].get("resourceVersion") for p in pods}
        for p in pods:
            if p["metadata"]["name"] in drop and (p.get("status") or {}).get("phase") == "Failed":
                # e.g. the pool's requirements do not install: say so, it will recur.
                log.warning("warm pool: pod %s failed before adoption; replacing it",
                            p["metadata"]["name"])
        for name in drop:
            self._delete(name, versions.get(name))
        made = [self._create_one() for _ in range(missing)]
        return made, drop

    def _create_one(self) -> str:
        spec, ns, s = self.spec, self.namespace, self.orch.settings
        name = f"zexec-pool-{spec.digest[:10]}-{secrets.token_hex(3)}"
        labels = {**m.server_labels("", spec), rules.LABEL_POOL: "true"}
        now = self.clock()
        with api_errors("creating the pool's requirements config map", ok=(409,)):
            raw(self.core.create_namespaced_config_map, ns, m.build_config_map(ns, spec, labels))
        with api_errors("copying the image pull secrets"):
            pulls = images.copy(self.core, ns, s.pull_secrets_dir, labels)
        key = rules.pool_key(self.orch._secret, name)
        with api_errors("creating a pool pod's key secret"):
            raw(self.core.create_namespaced_secret, ns, {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": ns, "labels": labels,
                             "annotations": {m.ANN_CREATED: f"{now:.3f}"}},
                "type": "Opaque", "data": {"key": base64.b64encode(key.encode()).decode()}})
        with api_errors("creating a pool pod"):
            raw(self.core.create_namespaced_pod, ns, self.build_pod(name, labels, pulls, now))
        log.info("warm pool: started %s", name)
        return name

    def build_pod(self, name: str, labels: dict[str, str], pulls: list[str],
                  now: float) -> dict[str, Any]:
        """A server pod as :func:`.manifests.build_pod` makes it, in pool mode: no user
        id or credential, but the Deploy API's URL, its name and its key's Secret."""
        spec, s = self.spec, self.orch.settings
        image = self.orch.pm.hook.zexec_server_image(env=spec) or \
            images.server_image(s, spec.python)
        pod = m.build_pod(self.namespace, name, "", spec, image, s, labels,
                          idle_timeout=self.orch.idle_timeout, created_at=now,
                          pull_secrets=pulls)
        del pod["metadata"]["annotations"][m.ANN_USER_ID]
        for c in pod["spec"]["containers"]:
            if c["name"] == m.SERVER_CONTAINER:
                c["env"] = [e for e in c["env"] if e["name"] not in
                            ("ZEXEC_SERVER_USER_ID", "ZEXEC_SERVER_CREDENTIAL")] + [
                    {"name": "ZEXEC_SERVER_POOL_URL", "value": s.pool_deploy_url},
                    {"name": "ZEXEC_SERVER_POOL_POD", "value": name},
                    {"name": "ZEXEC_SERVER_POOL_KEY",
                     "valueFrom": {"secretKeyRef": {"name": name, "key": "key"}}},
                ]
        return pod

    # ------------------------------------------------------------------ API helpers

    def _list(self) -> list[dict[str, Any]]:
        with api_errors("listing the pool's pods"):
            found = raw(self.core.list_namespaced_pod, self.namespace,
                        label_selector=rules.LABEL_POOL)
        return [p for p in found.get("items") or []
                if rules.LABEL_POOL in (p["metadata"].get("labels") or {})]

    def _read(self, name: str) -> dict[str, Any] | None:
        with api_errors(f"reading pool pod {name}"):
            try:
                return raw(self.core.read_namespaced_pod, name, self.namespace)
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
        return None

    def _delete(self, name: str, version: str | None = None) -> None:
        """Delete a pool pod (only if still at ``version``, when given) and its key (the
        Deploy API may not list Secrets: a key is deleted with its pod, by name)."""
        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(
            resource_version=version)) if version else None
        with api_errors(f"deleting pool pod {name}", ok=(404, 409)):
            raw(self.core.delete_namespaced_pod, name, self.namespace, body=body)
            with api_errors(f"deleting pool pod {name}'s key", ok=(404,)):
                raw(self.core.delete_namespaced_secret, name, self.namespace)
