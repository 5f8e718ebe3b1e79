"""KubernetesOrchestrator: each user's server in its own namespace, via the official client.

Stateless by design: everything ``status``/``list`` report is read back from the cluster
(the namespace's annotations hold the raw user id, the EnvSpec and the current pod's
name), so Deploy API replicas and restarts agree. A lock per user orders this
process's calls; across replicas the API server's 409s do.

``ensure`` creates the namespace, NetworkPolicy, Secret, ConfigMap and the server Job
(in that order, so no server pod ever runs unconfined) or, after the server ended,
replaces the Job and ConfigMap in place. A server is a Job (:mod:`.jobs`: the Job
controller replaces a pod lost with its node or drained, and nothing else); the
namespace's ``pod`` annotations name the Job, whose current pod is found by its
``job-name`` label. ``force`` on a ready server builds the new Job *beside* it (the
namespace's ``next-pod``/``next-env`` annotations, :mod:`zexec.core.replacing`): the
first ``status`` that sees it ready promotes it and deletes the old Job; a failed one is
reported while the old one goes on serving. ``terminate`` deletes the namespace;
Kubernetes removes everything in it (the namespace stays "Terminating" for a while,
during which the user has no server and a new ``ensure`` asks to retry shortly).
A namespace whose server has long been gone is deleted by :mod:`.reaper`
(:meth:`KubernetesOrchestrator.start_reaper`, ``ZEXEC_K8S_NAMESPACE_TTL``); warm pool: :mod:`.pool`.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import pluggy
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from zexec.adapters.orchestrator_k8s import access, images, jobs, quota
from zexec.adapters.orchestrator_k8s import manifests as m
from zexec.adapters.orchestrator_k8s.apicalls import api_errors, raw
from zexec.adapters.orchestrator_k8s.podstatus import PodPhase, registered_as
from zexec.adapters.orchestrator_k8s.pool import WarmPool
from zexec.adapters.orchestrator_k8s.pool_rules import locate
from zexec.adapters.orchestrator_k8s.reaper import ANN_IDLE_SINCE, NamespaceReaper
from zexec.adapters.orchestrator_k8s.resources import granted
from zexec.core import replacing
from zexec.core.errors import EnvironmentConflict, OrchestratorError
from zexec.core.model import EnvSpec, ServerStatus, UserIdentity
from zexec.core.ports import ServerRegistry
from zexec.core.protocol import server_credential
from zexec.core.replacing import conflict_message
from zexec.settings import KubernetesSettings


class KubernetesOrchestrator:
    """:class:`~zexec.core.ports.Orchestrator` on a Kubernetes cluster.

    ``plugin_manager`` answers the ``zexec_server_image`` and
    ``zexec_server_pod_overrides`` hooks (default: :func:`zexec.plugins.get_plugin_manager`);
    ``idle_timeout`` is passed to every server (``ZEXEC_SERVER_IDLE_TIMEOUT``).
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        settings: KubernetesSettings,
        server_secret: bytes,
        plugin_manager: pluggy.PluginManager | None = None,
        *,
        idle_timeout: float = 0.0,
        log_lines: int = 20,
        clock: Callable[[], float] = time.time,
        registry: ServerRegistry | None = None,
    ) -> None:
        """``registry``: the broker's registered servers; a started pod whose server has
        registered is ``ready`` then, not at the readiness probe's next period."""
        if plugin_manager is None:
            from zexec.plugins import get_plugin_manager

            plugin_manager = get_plugin_manager()
        self.core = client.CoreV1Api(api_client)
        self.net = client.NetworkingV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.settings = settings
        self.pm = plugin_manager
        self.idle_timeout = idle_timeout
        self.log_lines = log_lines
        self.clock = clock
        self._secret = server_secret
        m.namespace_name(settings.namespace_prefix, "x")  # validates the prefix now
        m.broker_port(settings.broker_backend_url)
        m.parse_labels(settings.broker_pod_labels)
        if settings.user_role:
            access.service_account(settings.service_account)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.reaper: NamespaceReaper | None = None
        self.pool = WarmPool(self, clock)  # inert with pool_size 0
        self.registry = registry

    def start_reaper(self, interval: float | None = None) -> None:
        """Delete idle users' namespaces in the background (``settings.namespace_ttl``;
        0 = never), and keep the warm pool topped up, until :meth:`close`."""
        if self.settings.namespace_ttl > 0 and self.reaper is None:
            self.reaper = NamespaceReaper(self, self.settings.namespace_ttl, self.clock)
            self.reaper.start(interval)
        self.pool.start()

    def close(self) -> None:
        self.pool.close()
        if self.reaper is not None:
            self.reaper.close()
            self.reaper = None

    # ------------------------------------------------------------------ the port

    def ensure(self, user: UserIdentity, spec: EnvSpec, force: bool = False) -> ServerStatus:
        ns = m.namespace_name(self.settings.namespace_prefix, user.user_id)
        with self._user_lock(user.user_id):
            existing = self._read_namespace(ns)
            if existing is None:
                return self._create(user, spec, ns)
            if self._owner(existing) != user.user_id:
                raise OrchestratorError(f"namespace {ns} belongs to another user")
            if self._terminating(existing):
                raise OrchestratorError(
                    "the previous server is still being removed; try again in a few seconds"
                )
            current, nxt = self._pair(existing, logs=False)
            decision = replacing.plan_ensure(current, nxt, spec, force)
            if decision == "conflict":
                have = replacing.wanted(current, nxt)
                raise EnvironmentConflict(
                    conflict_message(user.user_id, have.env if have else None, spec))
            if decision == "keep-current" and nxt is not None:
                self._drop_next(ns, existing)  # a failed replacement: the user is back
                nxt = None
            if decision in ("keep-current", "keep-next"):
                return replacing.view(current, nxt)
            if nxt is not None:
                self._drop_next(ns, existing)
            if decision == "replace-beside":
                return self._build_beside(user, spec, ns, current)
            return self._replace(user, spec, ns, existing)

    def cancel(self, user_id: str, digest: str | None = None) -> bool:
        ns = m.namespace_name(self.settings.namespace_prefix, user_id)
        with self._user_lock(user_id):
            existing = self._read_namespace(ns)
            if existing is None or self._owner(existing) != user_id or \
                    self._terminating(existing):
                return False
            what = replacing.plan_cancel(*self._pair(existing, logs=False), digest)
            if what == "next":
                self._drop_next(ns, existing)
        if what == "current":
            return self.terminate(user_id)
        return what is not None

    def terminate(self, user_id: str) -> bool:
        ns = m.namespace_name(self.settings.namespace_prefix, user_id)
        with self._user_lock(user_id):
            existing = self._read_namespace(ns)
            if existing is None or self._owner(existing) != user_id:
                return False
            if self._terminating(existing):
                return False
            self.pool.release(existing)  # an adopted pod lives in the pool's namespace
            with api_errors(f"deleting namespace {ns}"):
                try:
                    raw(self.core.delete_namespace, ns)
                except ApiException as e:
                    if e.status == 404:
                        return False
                    raise
            return True

    def status(self, user_id: str) -> ServerStatus | None:
        ns = m.namespace_name(self.settings.namespace_prefix, user_id)
        existing = self._read_namespace(ns)
        if existing is None or self._owner(existing) != user_id or self._terminating(existing):
            return None
        current, nxt = self._pair(existing, logs=True)
        if nxt is not None and nxt.phase == "ready":
            with self._user_lock(user_id):  # ensure() may be changing it meanwhile
                existing = self._read_namespace(ns)
                if existing is not None and self._owner(existing) == user_id and \
                        not self._terminating(existing):
                    current, nxt = self._pair(existing, logs=True)
                    if nxt is not None and nxt.phase == "ready":
                        self._promote(ns, existing, nxt)
                        current, nxt = nxt, None
        return replacing.view(current, nxt)

    def list(self) -> list[ServerStatus]:
        with api_errors("listing namespaces"):
            found = raw(
                self.core.list_namespace, label_selector="app.kubernetes.io/managed-by=zexec"
            )
        out = []
        for ns in found.get("items") or []:
            meta = ns.get("metadata") or {}
            if (
                (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == "zexec"
                and meta.get("name", "").startswith(self.settings.namespace_prefix)
                and self._owner(ns)
                and not self._terminating(ns)
            ):
                out.append(replacing.view(*self._pair(ns, logs=False)))
        return sorted(out, key=lambda s: s.user_id)

    # ------------------------------------------------------------------ provisioning

    def _create(self, user: UserIdentity, spec: EnvSpec, ns: str) -> ServerStatus:
        key = ns[len(self.settings.namespace_prefix) :]
        pod_name = self._pod_name(spec)
        body = m.build_namespace(
            ns, user.user_id, key, spec, pod_name, self.settings.pod_security_level,
            self.settings.pod_security_version,
        )
        with api_errors(f"creating namespace {ns}"):
            try:
                raw(self.core.create_namespace, body)
            except ApiException as e:
                if e.status == 409:
                    raise OrchestratorError(
                        "another request is creating this server; try again in a few seconds"
                    ) from e
                raise
        try:  # Adopt first: the pool pod binds and registers while the rest is made.
            adopted = self.pool.adopt(user, spec, ns, key)  # (on failure: GC'd, pool.py)
            labels = m.server_labels(key, spec)
            self._grant(ns, labels)
            access.apply_policy(self.net, ns, m.build_network_policy(ns, self.settings, labels))
            with api_errors("creating the namespace's quota"):
                quota.apply(self.core, ns, self.settings, labels)
            with api_errors("creating the credential secret"):
                cred = server_credential(self._secret, user.user_id)
                raw(self.core.create_namespaced_secret, ns, m.build_secret(ns, cred, labels))
            if not adopted:
                self._create_env_and_pod(user, spec, ns, key, pod_name)
        except BaseException:
            with api_errors(f"cleaning up namespace {ns}", ok=(404,)):
                raw(self.core.delete_namespace, ns)
            raise
        return ServerStatus(user.user_id, "pending", spec, since=self.clock())

    def _replace(
        self, user: UserIdentity, spec: EnvSpec, ns: str, existing: dict[str, Any]
    ) -> ServerStatus:
        key = ns[len(self.settings.namespace_prefix) :]
        labels = m.server_labels(key, spec)
        old_pod = (existing["metadata"].get("annotations") or {}).get(m.ANN_POD)
        self._grant(ns, labels)  # a namespace made before user_role was set has none
        # (settings may have changed since)
        access.apply_policy(self.net, ns, m.build_network_policy(ns, self.settings, labels))
        with api_errors("updating the namespace's quota"):
            quota.apply(self.core, ns, self.settings, labels)
        with api_errors("creating the credential secret", ok=(409,)):
            cred = server_credential(self._secret, user.user_id)
            raw(self.core.create_namespaced_secret, ns, m.build_secret(ns, cred, labels))
        if old_pod:
            self._delete_server(ns, old_pod)
        pod_name = self.pool.adopt(user, spec, ns, key) or self._pod_name(spec)
        if "/" not in pod_name:
            self._create_env_and_pod(user, spec, ns, key, pod_name)
        fresh = m.build_namespace(ns, user.user_id, key, spec, pod_name, "")["metadata"]
        with api_errors(f"updating namespace {ns}"):
            patch = {"labels": {m.LABEL_DIGEST: spec.digest[:16]}}
            # A server again: the reaper's idle clock starts over when this one ends.
            ann = {**fresh["annotations"], ANN_IDLE_SINCE: None}
            raw(self.core.patch_namespace, ns, {"metadata": {**patch, "annotations": ann}})
        self._drop_old_config_maps(ns, keep=m.config_map_name(spec))
        return ServerStatus(user.user_id, "pending", spec, since=self.clock())

    def _build_beside(self, user: UserIdentity, spec: EnvSpec, ns: str,
                      current: ServerStatus | None) -> ServerStatus:
        """A new pod for ``spec`` next to the serving one, named in the namespace's
        next-pod annotations."""
        key = ns[len(self.settings.namespace_prefix) :]
        pod_name = self._pod_name(spec)
        self._create_env_and_pod(user, spec, ns, key, pod_name)
        with api_errors(f"updating namespace {ns}"):
            raw(self.core.patch_namespace, ns, {"metadata": {"annotations": {
                m.ANN_NEXT_POD: pod_name, m.ANN_NEXT_ENV: m.env_json(spec)}}})
        nxt = ServerStatus(user.user_id, "pending", spec, since=self.clock())
        return replacing.view(current, nxt)

    def _drop_next(self, ns: str, existing: dict[str, Any]) -> None:
        """Delete the replacement pod, if any, and forget it (the current one stays)."""
        ann = existing["metadata"].get("annotations") or {}
        pod = ann.get(m.ANN_NEXT_POD)
        if pod:
            self._delete_server(ns, pod)
        with api_errors(f"updating namespace {ns}"):
            raw(self.core.patch_namespace, ns, {"metadata": {"annotations": {
                m.ANN_NEXT_POD: None, m.ANN_NEXT_ENV: None}}})
        keep = ann.get(m.ANN_ENV)
        if keep:
            try:
                spec = m.env_from(keep)
            except ValueError:
                return
            self._drop_old_config_maps(ns, keep=m.config_map_name(spec))

    def _promote(self, ns: str, existing: dict[str, Any], nxt: ServerStatus) -> None:
        """The replacement is ready (registered: the broker routes to it): it becomes
        the current pod, and the old one is deleted."""
        ann = existing["metadata"].get("annotations") or {}
        old_pod, new_pod = ann.get(m.ANN_POD), ann[m.ANN_NEXT_POD]
        assert nxt.env is not None
        with api_errors(f"updating namespace {ns}"):
            raw(self.core.patch_namespace, ns, {"metadata": {
                "labels": {m.LABEL_DIGEST: nxt.env.digest[:16]},
                "annotations": {m.ANN_POD: new_pod, m.ANN_ENV: ann[m.ANN_NEXT_ENV],
                                m.ANN_NEXT_POD: None, m.ANN_NEXT_ENV: None}}})
        if old_pod:
            self._delete_server(ns, old_pod)
        self._drop_old_config_maps(ns, keep=m.config_map_name(nxt.env))

    def _create_env_and_pod(
        self, user: UserIdentity, spec: EnvSpec, ns: str, key: str, pod_name: str
    ) -> None:
        labels = m.server_labels(key, spec)
        with api_errors("creating the requirements config map", ok=(409,)):  # immutable per digest
            raw(self.core.create_namespaced_config_map, ns, m.build_config_map(ns, spec, labels))
        image = self.pm.hook.zexec_server_image(env=spec)
        image = image or images.server_image(self.settings, spec.python)
        # pluggy returns the last-registered plugin's result first; apply in registration
        # order so a later plugin wins, as the hookspec documents.
        overrides = [
            o for o in reversed(self.pm.hook.zexec_server_pod_overrides(env=spec, user=user)) if o
        ]
        with api_errors("copying the image pull secrets"):
            pulls = images.copy(self.core, ns, self.settings.pull_secrets_dir, labels)
        pod = m.build_pod(
            ns, pod_name, user.user_id, spec, image, self.settings, labels,
            idle_timeout=self.idle_timeout, created_at=self.clock(), overrides=overrides,
            pull_secrets=pulls,
        )  # fmt: skip
        with api_errors("creating the server job"):
            raw(self.batch.create_namespaced_job, ns, jobs.build_job(pod, m.SERVER_CONTAINER))

    def _delete_server(self, ns: str, name: str) -> None:
        if "/" in name:  # an adopted warm-pool pod (pool_rules.locate)
            return self.pool.delete_adopted(name)
        jobs.delete_server(self.core, self.batch, ns, name)

    def _grant(self, ns: str, labels: dict[str, str]) -> None:
        with api_errors("creating the Deploy API's role binding"):
            access.grant(self.rbac, ns, self.settings.user_role,
                         self.settings.service_account, labels)

    def _drop_old_config_maps(self, ns: str, keep: str) -> None:
        with api_errors("listing config maps"):
            found = raw(self.core.list_namespaced_config_map, ns)
        for item in found.get("items") or []:
            name = item["metadata"]["name"]
            if name.startswith(m.CONFIG_PREFIX) and name != keep:
                with api_errors(f"deleting config map {name}", ok=(404,)):
                    raw(self.core.delete_namespaced_config_map, name, ns)

    # ------------------------------------------------------------------ reading back

    def _pair(self, ns: dict[str, Any], logs: bool) -> tuple[ServerStatus, ServerStatus | None]:
        """(current server, replacement server or None) of a user's namespace."""
        ann = ns["metadata"].get("annotations") or {}
        current = self._status_of(ns, logs, m.ANN_POD, m.ANN_ENV)
        if not ann.get(m.ANN_NEXT_POD):
            return current, None
        return current, self._status_of(ns, logs, m.ANN_NEXT_POD, m.ANN_NEXT_ENV)

    def _status_of(self, ns: dict[str, Any], logs: bool, pod_key: str = m.ANN_POD,
                   env_key: str = m.ANN_ENV) -> ServerStatus:
        meta = ns["metadata"]
        ann = meta.get("annotations") or {}
        user_id = ann[m.ANN_USER_ID]
        try:
            env: EnvSpec | None = m.env_from(ann.get(env_key, ""))
        except ValueError:
            env = None
        name = ann.get(pod_key, "")
        where = locate(name, meta["name"])[0]
        found = self._read_server(meta["name"], name) if name else None
        if found is None:
            return ServerStatus(
                user_id, "failed", env, "the server is gone (its job was deleted)"
            )
        got, pod, obj = found
        if got.phase == "starting" and pod and self.registry is not None and \
                registered_as(self.registry.server_info(user_id), pod):
            got = dataclasses.replace(got, phase="ready", reason="")
        since = got.since
        if since is None:
            created = (obj.get("metadata", {}).get("annotations") or {}).get(m.ANN_CREATED, "")
            try:
                since = float(created)
            except ValueError:
                since = 0.0
        tail: tuple[str, ...] = ()
        if logs and pod and got.log_container and got.phase in ("failed", "installing"):
            tail = self._log_tail(where, pod, got.log_container)
        return ServerStatus(user_id, got.phase, env, got.reason, tail, since,
                            resources=granted(self.settings, env.resources) if env else None)

    def _log_tail(self, ns: str, pod: str, container: str) -> tuple[str, ...]:
        try:
            text = self.core.read_namespaced_pod_log(
                pod, ns, container=container, tail_lines=self.log_lines
            )
        except ApiException:
            return ()  # logs are a courtesy: a status without them is still right
        lines = [line for line in str(text).splitlines() if line.strip()]
        return tuple(lines[-self.log_lines :])

    def _read_namespace(self, ns: str) -> dict[str, Any] | None:
        with api_errors(f"reading namespace {ns}"):
            try:
                return raw(self.core.read_namespace, ns)
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
        return None  # unreachable; keeps type checkers content

    def _read_server(self, ns: str, name: str
                     ) -> tuple[PodPhase, str | None, dict[str, Any]] | None:
        if "/" in name:  # an adopted warm-pool pod (pool_rules.locate)
            return self.pool.read_adopted(name)
        return jobs.read_server(self.core, self.batch, ns, name,
                                lambda: self._grant(ns, dict(m.MANAGED_BY)),
                                bool(self.settings.user_role))

    @staticmethod
    def _owner(ns: dict[str, Any]) -> str:
        return ((ns.get("metadata") or {}).get("annotations") or {}).get(m.ANN_USER_ID, "")

    @staticmethod
    def _terminating(ns: dict[str, Any]) -> bool:
        return bool(ns["metadata"].get("deletionTimestamp")) or (
            (ns.get("status") or {}).get("phase") == "Terminating"
        )

    @staticmethod
    def _pod_name(spec: EnvSpec) -> str:
        # A fresh name per pod: the replaced pod may still be terminating under its own.
        return f"zexec-server-{spec.digest[:10]}-{secrets.token_hex(3)}"

    def _user_lock(self, user_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(user_id, threading.Lock())
