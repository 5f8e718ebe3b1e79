"""The TTL reaper: deleting the namespaces of users whose server is long gone.

A user namespace outlives its server on purpose (the next spawn reuses its policy,
secret and role binding, and ``status`` can still explain a failure), but an idle
user's namespace would otherwise stay forever. A *sweep* lists the zexec namespaces
and, for each whose server is gone (terminated, idle-exited or failed, no replacement
being built):

* stamps ``zexec.io/idle-since`` (epoch seconds) on the namespace the first time it
  sees it so; the clock lives on the namespace, not in a replica's memory, so every
  Deploy API replica and restart agrees on it;
* deletes the namespace once ``now - idle-since`` exceeds the TTL.

A namespace whose server is alive again loses the annotation (so does every spawn that
rebuilds the pod, in ``KubernetesOrchestrator._replace``).

Safe with several replicas sweeping at once: stamping twice only moves the time by a
sweep; deleting twice is a 404; and the delete carries the namespace's
``resourceVersion`` as a precondition, so a spawn on another replica that rewrote the
namespace in between (a new pod) wins over the reaper (409, skipped). In this process
the user's lock orders the reaper after a spawn under way.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kubernetes import client

from zexec.adapters.orchestrator_k8s.apicalls import api_errors, raw
from zexec.core.errors import OrchestratorError

if TYPE_CHECKING:
    from zexec.adapters.orchestrator_k8s.orchestrator import KubernetesOrchestrator

log = logging.getLogger(__name__)

#: Epoch seconds since which the namespace's server has been gone (absent: alive).
ANN_IDLE_SINCE = "zexec.io/idle-since"
#: Phases of a server that no longer exists (and is not coming back by itself).
GONE = frozenset({"terminated", "failed"})


def sweep_interval(ttl: float) -> float:
    """Seconds between sweeps: a tenth of the TTL (a namespace goes at most 10% late),
    between 1 s and 5 min (a day's TTL costs one namespace list every 5 min)."""
    return min(max(ttl / 10.0, 1.0), 300.0)


class NamespaceReaper:
    """Deletes ``orch``'s user namespaces idle for more than ``ttl`` seconds."""

    def __init__(self, orch: KubernetesOrchestrator, ttl: float,
                 clock: Callable[[], float] = time.time) -> None:
        if ttl <= 0:
            raise ValueError("a reaper needs a positive TTL (0 means: never reap)")
        self.orch = orch
        self.ttl = ttl
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ background

    def start(self, interval: float | None = None) -> NamespaceReaper:
        """Sweep every ``interval`` seconds (default :func:`sweep_interval`) in a daemon
        thread until :meth:`close`."""
        every = sweep_interval(self.ttl) if interval is None else interval
        self._thread = threading.Thread(target=self._run, args=(every,),
                                        name="zexec-namespace-reaper", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.sweep()
            except Exception:  # the next sweep may well succeed: never let the thread die
                log.exception("namespace reaper: sweep failed")

    # ------------------------------------------------------------------ one sweep

    def sweep(self) -> list[str]:
        """One pass over the user namespaces; returns the names it deleted."""
        prefix = self.orch.settings.namespace_prefix
        with api_errors("listing namespaces"):
            found = raw(self.orch.core.list_namespace,
                        label_selector="app.kubernetes.io/managed-by=zexec")
        deleted = []
        for ns in found.get("items") or []:
            meta = ns.get("metadata") or {}
            name = meta.get("name", "")
            if not name.startswith(prefix) or not self.orch._owner(ns) or \
                    self.orch._terminating(ns):
                continue
            try:
                if self._visit(ns):
                    deleted.append(name)
            except OrchestratorError as e:  # one namespace's trouble must not stop the rest
                log.warning("namespace reaper: %s: %s", name, e)
        return deleted

    def _gone(self, ns: dict[str, Any]) -> bool:
        current, nxt = self.orch._pair(ns, logs=False)
        return current.phase in GONE and (nxt is None or nxt.phase in GONE)

    def _visit(self, ns: dict[str, Any]) -> bool:
        name = ns["metadata"]["name"]
        stamp = _idle_since(ns)
        gone = self._gone(ns)
        now = self.clock()
        if not gone:
            if ANN_IDLE_SINCE in (ns["metadata"].get("annotations") or {}):
                self._annotate(name, None)
            return False
        if stamp is None:
            self._annotate(name, f"{now:.3f}")
            return False
        if now - stamp <= self.ttl:
            return False
        user_id = self.orch._owner(ns)
        with self.orch._user_lock(user_id):  # after any spawn of this replica under way
            fresh = self.orch._read_namespace(name)
            if fresh is None or self.orch._owner(fresh) != user_id or \
                    self.orch._terminating(fresh):
                return False
            stamp = _idle_since(fresh)
            if stamp is None or now - stamp <= self.ttl or not self._gone(fresh):
                return False
            version = fresh["metadata"].get("resourceVersion")
            body = client.V1DeleteOptions(
                preconditions=client.V1Preconditions(resource_version=version))
            with api_errors(f"deleting idle namespace {name}", ok=(404, 409)):
                raw(self.orch.core.delete_namespace, name, body=body)
                log.info("namespace reaper: deleted %s (server gone for %.0f s)",
                         name, now - stamp)
                return True
        return False

    def _annotate(self, name: str, value: str | None) -> None:
        with api_errors(f"updating namespace {name}", ok=(404,)):
            raw(self.orch.core.patch_namespace, name,
                {"metadata": {"annotations": {ANN_IDLE_SINCE: value}}})


def _idle_since(ns: dict[str, Any]) -> float | None:
    text = ((ns.get("metadata") or {}).get("annotations") or {}).get(ANN_IDLE_SINCE)
    try:
        return float(text) if text else None
    except ValueError:
        return None  # not ours to trust: re-stamped by the next gone sweep
