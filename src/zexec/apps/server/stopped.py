"""Workers that cannot make progress because they are stopped.

A worker stopped by SIGSTOP (or SIGTSTP, SIGTTIN, SIGTTOU: state ``T`` in
``/proc/<pid>/stat``) runs nothing until someone sends SIGCONT, so a call without a
timeout waiting for it would wait for ever. The server looks at its workers' state now
and then; one stopped for ``timeout`` seconds is killed, and its call fails with a
message that says so (``WORKER_DIED``). A worker under a debugger (state ``t``) is left
alone: someone is looking at it.

Why this and not a default deadline on every call: a call's run time says nothing about
its health (scientific code legitimately runs for hours, and a deadline every user must
remember to raise would kill it); a stopped process, on the other hand, provably makes no
progress. Code that is merely slow, blocked in a system call or looping runs as it would
locally; Ctrl-C, ``future.cancel()`` or ``@zexec.remote(timeout=...)`` end it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from zexec.adapters.orchestrator_local.procs import stat_fields

log = logging.getLogger("zexec.server")

#: The state of ``/proc/<pid>/stat`` counted as stopped.
STOPPED = "T"


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (R, S, D, T, t, Z ...), None if it is gone."""
    fields = stat_fields(pid)
    return fields[0] if fields else None


class StoppedWatch:
    """Which workers have been stopped for ``timeout`` seconds (0: never looks).
    ``state_of(pid)`` reads a process's state (default: :func:`proc_state`); time is
    passed in. It looks every ``timeout / 4`` seconds, at most every second."""

    def __init__(self, timeout: float,
                 state_of: Callable[[int], str | None] = proc_state) -> None:
        self.timeout = timeout
        self.state_of = state_of
        self.interval = min(1.0, timeout / 4)
        self.message = (
            f"the worker running the call was stopped (SIGSTOP) for {timeout:g}s and was "
            "killed: a stopped process makes no progress, and the call would have waited for "
            "ever (ZEXEC_SERVER_STOPPED_TIMEOUT)")
        self._since: dict[int, float] = {}
        self._next = 0.0

    def due(self, now: float) -> bool:
        """Whether it is time for a look (:meth:`check`)."""
        return self.timeout > 0 and now >= self._next

    def check(self, pids: Iterable[int], now: float) -> list[int]:
        """The pids among ``pids`` seen stopped at every look for ``timeout`` seconds
        (once each: a pid reported is forgotten). A pid not seen stopped starts over."""
        if self.timeout <= 0:
            return []
        self._next = now + self.interval
        due: list[int] = []
        seen = {}
        for pid in pids:
            if self.state_of(pid) == STOPPED:
                seen[pid] = since = self._since.get(pid, now)
                if now - since >= self.timeout:
                    due.append(pid)
                    del seen[pid]
        self._since = seen
        return due

    def tick(self, pool: Any, now: float) -> None:
        """Kill the workers of ``pool`` stopped too long (when a look is due); each one's
        exit then fails its call with :attr:`message` (``WorkerProcess.reason``)."""
        if self.due(now):
            by_pid = {w.proc.pid: w for w in pool.workers.values()}
            for pid in self.check(by_pid, now):
                by_pid[pid].reason = self.message
                log.warning("worker pid %d: %s", pid, self.message)
                pool.kill(by_pid[pid])
