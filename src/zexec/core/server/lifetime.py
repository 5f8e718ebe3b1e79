"""When a per-user server stops, and when a stopping one may exit, on an explicit clock.

A server stops when asked (a signal, the broker refusing it) or after ``idle_timeout``
seconds without a call (0: never). Stopping, it tells the broker (which then sends no
more calls), lets its calls finish for up to ``drain_timeout`` seconds, and exits once
none is left. A server whose workers take calls from the broker directly first waits
``settle`` seconds: a call the broker gave a worker just before is announced to the
server only once it has run a while.
"""

from __future__ import annotations


class Lifetime:
    def __init__(self, *, idle_timeout: float, drain_timeout: float, now: float) -> None:
        self.idle_timeout = idle_timeout
        self.drain_timeout = drain_timeout
        self.last_activity = now
        self.stopping = False
        self._deadline: float | None = None
        self._settled = 0.0

    def active(self, now: float) -> None:
        """A call came, ended or was heard of."""
        self.last_activity = max(self.last_activity, now)

    def stop(self, *, drain: bool = True) -> None:
        self.stopping = True
        if not drain:
            self.drain_timeout = 0.0

    def idle(self, now: float, busy: bool) -> bool:
        """No call for longer than the idle timeout: time to stop."""
        return bool(self.idle_timeout) and not busy \
            and now - self.last_activity > self.idle_timeout

    def begin(self, now: float, settle: float) -> bool:
        """Start draining (stopping); True the first time only, when the server tells the
        broker it is stopping. ``settle``: see the module doc."""
        if self._deadline is not None:
            return False
        self._deadline = now + self.drain_timeout
        self._settled = now + (settle if self.drain_timeout > 0 else 0.0)
        return True

    def may_exit(self, now: float, busy: bool) -> bool:
        """Draining is over: no call left (once settled), or the drain timeout passed."""
        assert self._deadline is not None, "begin() first"
        return (not busy and now >= self._settled) or now >= self._deadline
