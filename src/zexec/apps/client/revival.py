"""Calls refused because the user's server had stopped for idleness, sent again once it
runs again.

A server nobody calls for its idle timeout (an hour by default) exits, and the broker
answers the next call ``NO_SERVER`` before routing it anywhere: that call never ran, so
sending it again is safe (``SERVER_GONE``, a server lost during a call, is never
retried). A :class:`~zexec.apps.client.connect.Connection` that made the server with
``environment()`` gives its session a *hook* that starts the same environment again;
the session parks each such call here, one thread runs the hook (once for all the calls
parked meanwhile) and hands the calls back to the session, which sends them under new
ids. A call is revived at most once. Without a hook (a bare ``Client``, no
``environment()`` yet, or after ``terminate()``) the call fails as before: a notebook
cell run after lunch just works, a server its user stopped is not started behind their
back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from zexec.apps.client.output import Writer
from zexec.apps.client.pending import PendingCall
from zexec.core.errors import ServerUnavailable

#: The hook: start the user's server again (``write`` is where the first parked call's
#: output goes, for a word to the user); raises when it cannot.
Hook = Callable[[Writer | None], None]


class Revival:
    def __init__(self, hand_back: Callable[[PendingCall], None],
                 fail: Callable[[PendingCall, BaseException], None],
                 clock: Callable[[], float]) -> None:
        self.hook: Hook | None = None
        self._hand_back = hand_back
        self._fail = fail
        self._clock = clock
        #: When the hook last succeeded: a call sent before then was refused by the
        #: broker before the server was back, and goes again without another run.
        self._back_at = float("-inf")
        self._parked: list[tuple[PendingCall, BaseException]] = []
        self._lock = threading.Lock()
        self._running = False

    def takes(self, call: PendingCall, code: object) -> bool:
        """Whether ``call``, refused with error ``code``, is one to park."""
        return code == "NO_SERVER" and self.hook is not None and call.rebuild is not None \
            and not call.revived

    def park(self, call: PendingCall, error: BaseException) -> None:
        """Hold ``call`` (refused with ``error``) until the server runs again."""
        call.revived = True
        sent_at, call.sent_at = call.sent_at, None  # a cancel now finds it here
        with self._lock:
            if sent_at is not None and sent_at < self._back_at:
                self._hand_back(call)
                return
            self._parked.append((call, error))
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, daemon=True, name="zexec-revive").start()

    def unpark(self, call: PendingCall) -> bool:
        """Forget a parked ``call`` (it was cancelled); False if it was not parked."""
        with self._lock:
            for i, (parked, _) in enumerate(self._parked):
                if parked is call:
                    del self._parked[i]
                    return True
        return False

    def _run(self) -> None:
        hook = self.hook
        with self._lock:
            write = self._parked[0][0].write if self._parked else None
        failure: BaseException | None = None
        try:
            if hook is None:
                raise ServerUnavailable("no server, and none to start again")
            hook(write)
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the calls
            failure = exc
        with self._lock:
            parked, self._parked = self._parked, []
            self._running = False
            if failure is None:
                self._back_at = self._clock()
        for call, error in parked:
            if failure is None:
                self._hand_back(call)
            elif isinstance(failure, ServerUnavailable):  # the hook's word: not to start
                self._fail(call, failure)
            else:
                err = ServerUnavailable(f"{error}; starting your server again did not work: "
                                        f"{failure}")
                err.__cause__ = failure
                self._fail(call, err)
