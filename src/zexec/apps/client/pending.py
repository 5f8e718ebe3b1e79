"""A call in flight, as the client session and its callers see it: the future the caller
holds, and what the session keeps to drive it (frames, deadlines, where its output goes)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zexec.apps.client.output import Writer
from zexec.apps.client.tracebacks import public
from zexec.core.ports import Serializer

if TYPE_CHECKING:
    from zexec.apps.client.session import Session

#: Ends a generator call's stream of items.
END = object()


class RemoteFuture(Future):
    """A :class:`concurrent.futures.Future` whose ``cancel()`` also stops the remote work."""

    _session: Session | None = None
    _call: PendingCall | None = None

    def cancel(self) -> bool:
        # Cancelled here first, then the server asked: the other order let the I/O
        # thread finish the future (CallCancelled) in between, and cancel() said False.
        if not super().cancel():
            return False
        if self._session is not None and self._call is not None:
            self._session.cancel(self._call, "future cancelled")
        return True

    @public
    def result(self, timeout: float | None = None) -> Any:
        """The call's value; raises its error (with the remote frames as its traceback)."""
        return super().result(timeout)


@dataclass(eq=False)
class PendingCall:
    call_id: bytes
    frames: list[Any] | None
    serializer: Serializer
    future: RemoteFuture
    timeout: float | None
    created: float
    items: queue.SimpleQueue | None = None  # set for generator calls
    #: Where its printed output goes (fixed when the call starts: see output.py).
    write: Writer | None = None
    sent_at: float | None = None
    done: bool = field(default=False)
    #: Set once a cancel request for this call has left (or needed not leave) this process.
    #: Made by the first cancel request only (an Event, a lock and a condition, is
    #: 1.7 µs on every call otherwise).
    cancel_sent: threading.Event | None = None
    #: The call's frames again under another id, for a call the broker refused because
    #: the user's server had stopped (see revival.py); dropped at its first event.
    rebuild: Callable[[bytes], list[Any]] | None = None
    #: Sent again once already after such a refusal.
    revived: bool = False
