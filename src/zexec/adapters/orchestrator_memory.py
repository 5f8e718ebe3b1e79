"""An in-memory :class:`~zexec.core.ports.Orchestrator`: the Deploy API's ``memory``
backend (demos) and the fake under tests of the apps above it.

It provisions nothing: it records one :class:`ServerStatus` per user with the same
ensure/terminate semantics as the real adapters (the contract test runs the same checks
against all of them), and tests drive the lifecycle by hand with :meth:`advance`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from zexec.core import replacing
from zexec.core.model import PHASES, EnvSpec, ServerStatus, UserIdentity

__all__ = ["InMemoryOrchestrator"]

#: It runs nothing, so it enforces nothing: a status says so.
NOTE = "the in-memory orchestrator runs no server; nothing is enforced"


class InMemoryOrchestrator:
    """Fake orchestrator: ``servers`` maps user id -> current :class:`ServerStatus`,
    ``nexts`` user id -> the replacement being built beside it (see
    :mod:`zexec.core.replacing`).

    ``initial_phase`` is the phase a new server gets (``"ready"`` lets API tests skip the
    lifecycle); ``calls`` records every port call as ``(method, user_id, detail)`` for
    assertions. Thread-safe: the Deploy API calls it from worker threads.
    """

    def __init__(
        self, *, initial_phase: str = "pending", clock: Callable[[], float] = time.time
    ) -> None:
        if initial_phase not in PHASES:
            raise ValueError(f"unknown phase {initial_phase!r}; one of {PHASES}")
        self.initial_phase = initial_phase
        self.clock = clock
        self.servers: dict[str, ServerStatus] = {}
        self.nexts: dict[str, ServerStatus] = {}
        self.calls: list[tuple[str, str, object]] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the port

    def ensure(self, user: UserIdentity, spec: EnvSpec, force: bool = False) -> ServerStatus:
        uid = user.user_id
        with self._lock:
            self.calls.append(("ensure", uid, (spec.digest, force)))
            cur, nxt = self.servers.get(uid), self.nexts.get(uid)
            decision = replacing.plan_ensure(cur, nxt, spec, force)
            if decision == "conflict":
                raise replacing.conflict(uid, cur, nxt, spec)
            if decision == "keep-current":
                self.nexts.pop(uid, None)  # a failed replacement: the user is back
            elif decision in ("replace-beside", "restart"):
                self.nexts.pop(uid, None)
                st = ServerStatus(uid, self.initial_phase, spec, since=self.clock(),
                                  resources=spec.resources, resources_note=NOTE)
                if decision == "restart" or st.phase == "ready":
                    self.servers[uid] = st
                else:
                    self.nexts[uid] = st
            return replacing.view(self.servers.get(uid), self.nexts.get(uid))

    def terminate(self, user_id: str) -> bool:
        with self._lock:
            self.calls.append(("terminate", user_id, None))
            had_next = self.nexts.pop(user_id, None) is not None
            return (self.servers.pop(user_id, None) is not None) or had_next

    def cancel(self, user_id: str, digest: str | None = None) -> bool:
        with self._lock:
            self.calls.append(("cancel", user_id, digest))
            what = replacing.plan_cancel(self.servers.get(user_id), self.nexts.get(user_id),
                                         digest)
            if what == "next":
                del self.nexts[user_id]
            elif what == "current":
                del self.servers[user_id]
            return what is not None

    def status(self, user_id: str) -> ServerStatus | None:
        with self._lock:
            return replacing.view(self.servers.get(user_id), self.nexts.get(user_id))

    def list(self) -> list[ServerStatus]:
        with self._lock:
            views = [replacing.view(self.servers.get(u), self.nexts.get(u))
                     for u in {*self.servers, *self.nexts}]
        return sorted((v for v in views if v is not None), key=lambda s: s.user_id)

    # ------------------------------------------------------------------ test helpers

    def advance(
        self, user_id: str, phase: str, reason: str = "", log_tail: Iterable[str] = ()
    ) -> ServerStatus:
        """Move ``user_id``'s server (the replacement, while one is being built) to
        ``phase``, as the background build would; a replacement that gets ready
        replaces the current server."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; one of {PHASES}")
        with self._lock:
            table = self.nexts if user_id in self.nexts else self.servers
            cur = table[user_id]
            st = replace(cur, phase=phase, reason=reason, log_tail=tuple(log_tail),
                         since=self.clock())
            table[user_id] = st
            if table is self.nexts and phase == "ready":
                self.servers[user_id] = self.nexts.pop(user_id)
            return st

