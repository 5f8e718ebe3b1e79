"""An in-memory :class:`~zexec.core.ports.Orchestrator` for tests of the apps above it.

It provisions nothing: it records one :class:`ServerStatus` per user with the same
ensure/terminate semantics as the real adapters (the contract test runs the same checks
against all of them), and tests drive the lifecycle by hand with :meth:`advance`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from zexec.core.errors import EnvironmentConflict
from zexec.core.model import PHASES, EnvSpec, ServerStatus, UserIdentity

#: Phases after which nothing runs any more; ``ensure`` starts such a server afresh.
TERMINAL = frozenset({"failed", "terminated"})


class InMemoryOrchestrator:
    """Fake orchestrator: ``servers`` maps user id -> current :class:`ServerStatus`.

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
        self.calls: list[tuple[str, str, object]] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the port

    def ensure(self, user: UserIdentity, spec: EnvSpec, force: bool = False) -> ServerStatus:
        with self._lock:
            self.calls.append(("ensure", user.user_id, (spec.digest, force)))
            cur = self.servers.get(user.user_id)
            if cur is not None and cur.phase not in TERMINAL and not force:
                if cur.env is not None and cur.env.digest == spec.digest:
                    return cur
                raise EnvironmentConflict(conflict_message(user.user_id, cur.env, spec))
            st = ServerStatus(user.user_id, self.initial_phase, spec, since=self.clock())
            self.servers[user.user_id] = st
            return st

    def terminate(self, user_id: str) -> bool:
        with self._lock:
            self.calls.append(("terminate", user_id, None))
            return self.servers.pop(user_id, None) is not None

    def status(self, user_id: str) -> ServerStatus | None:
        with self._lock:
            return self.servers.get(user_id)

    def list(self) -> list[ServerStatus]:
        with self._lock:
            return sorted(self.servers.values(), key=lambda s: s.user_id)

    # ------------------------------------------------------------------ test helpers

    def advance(
        self, user_id: str, phase: str, reason: str = "", log_tail: Iterable[str] = ()
    ) -> ServerStatus:
        """Move ``user_id``'s server to ``phase`` (as the background build would)."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; one of {PHASES}")
        with self._lock:
            cur = self.servers[user_id]
            st = ServerStatus(user_id, phase, cur.env, reason, tuple(log_tail), since=self.clock())
            self.servers[user_id] = st
            return st


def conflict_message(user_id: str, current: EnvSpec | None, wanted: EnvSpec) -> str:
    """The 409 text every adapter uses, so users see the same advice everywhere."""
    have = current.digest[:12] if current else "unknown"
    return (
        f"user {user_id!r} already has a server with another environment "
        f"(digest {have}, requested {wanted.digest[:12]}); terminate it first or "
        f"spawn again with force=true to replace it"
    )
