"""``Client.map``: many remote calls pipelined, one item per call or in batches.

Batches follow :mod:`zexec.core.batching`: the first items go one per call while the
function's pace on the server is unknown, then as many per call as run in about 20 ms.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from zexec.adapters.serializer import localmods
from zexec.apps.client.pending import END, PendingCall
from zexec.apps.client.session import Session
from zexec.core.batching import BatchSizer, run_batch
from zexec.core.errors import ProtocolError

if TYPE_CHECKING:
    from zexec.apps.client.api import Client

#: A batched map sends at most this many single-item calls before it knows how long an
#: item takes, and waits at most PROBE_WAIT seconds for the first one to tell it.
PROBE_CALLS = 8
PROBE_WAIT = 0.05


def map_calls(client: Client, fn: Callable, iterables: tuple[Iterable[Any], ...],
              serializer: str | None, timeout: float | None,
              window: int, modules: tuple[Any, ...] = ()) -> Iterator[Any]:
    """``map`` with one remote call per item, up to ``window`` in flight."""
    ser = client._serializer(serializer)
    fn_frame = client._frame(fn, ser, modules)  # serialized once for all calls
    inflight: deque[PendingCall] = deque()
    try:
        for args in zip(*iterables, strict=False):
            inflight.append(client._start(fn, args, {}, serializer=serializer,
                                          timeout=timeout, fn_frame=fn_frame))
            if len(inflight) >= window:
                yield client._session.wait(inflight.popleft())
        while inflight:
            yield client._session.wait(inflight.popleft())
    finally:
        for call in inflight:
            client._session.cancel(call, "map abandoned")


def map_batches(client: Client, fn: Callable, iterables: tuple[Iterable[Any], ...],
                serializer: str | None, timeout: float | None, window: int,
                sizer: BatchSizer, modules: tuple[Any, ...] = ()) -> Iterator[Any]:
    """``map`` with many items per remote call (:func:`run_batch`), sized by ``sizer``."""
    ser = client._serializer(serializer)
    # A reference (the same every time), with the local modules ``fn`` needs, since
    # ``fn`` travels as an argument.
    needs = tuple(localmods.roots_for(fn, ser.name))
    runner = client._frame(run_batch, ser, modules + needs)
    name = getattr(fn, "__name__", "")
    source = zip(*iterables, strict=False)
    inflight: deque[_Batch] = deque()
    queued = 0  # items in flight
    exhausted = False
    try:
        while True:
            while not exhausted:
                if not sizer.measured and len(inflight) >= PROBE_CALLS:
                    # Learn the function's pace from the first call before sending
                    # more one by one; one slower than PROBE_WAIT stays one per call.
                    if not inflight[0].wait_first(sizer, PROBE_WAIT):
                        sizer.record(1, PROBE_WAIT)
                size = sizer.next_size()
                if inflight and queued + size > window:
                    break  # wait for room for a whole batch
                chunk = list(islice(source, size))
                if not chunk:
                    exhausted = True
                    break
                call = client._start(
                    run_batch, (fn, chunk), {}, serializer=serializer,
                    timeout=None if timeout is None else timeout * len(chunk),
                    fn_frame=runner, name=name)
                inflight.append(_Batch(call, len(chunk)))
                queued += len(chunk)
            if not inflight:
                return
            batch = inflight.popleft()
            queued -= batch.size
            yield from batch.results(client._session, sizer)
    finally:
        for batch in inflight:
            client._session.cancel(batch.call, "map abandoned")


def next_item(session: Session, call: PendingCall) -> tuple[Any, Any]:
    """The next ``(marker, value)`` a streaming call produced (``marker`` is END with
    the error or None last); Ctrl-C while waiting cancels the remote call."""
    try:
        return call.items.get()
    except KeyboardInterrupt:
        session.cancel(call, "keyboard_interrupt", wait=1.0)
        raise


def batch_size_of(value: int | str) -> int | None:
    """``batch_size`` checked: None for "auto", else the fixed size."""
    if value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'batch_size must be "auto" or an int >= 1, not {value!r}')
    return value


def _measure(sizer: BatchSizer, item: tuple[Any, Any]) -> None:
    """Feed the pace a batch reported (``(seconds, values, failed)``) to ``sizer``."""
    marker, value = item
    if marker is not END:
        seconds, values, failed = value
        sizer.record(len(values) + (failed is not None), seconds)


class _Batch:
    """One in-flight call of a batched map: ``size`` items run by :func:`run_batch`."""

    def __init__(self, call: PendingCall, size: int) -> None:
        self.call = call
        self.size = size
        self._first: tuple[Any, Any] | None = None  # taken early by peek()

    def wait_first(self, sizer: BatchSizer, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for this batch's report and feed its pace to
        ``sizer``; False if it has not come."""
        if self._first is None:
            try:
                self._first = self.call.items.get(timeout=timeout)
            except queue.Empty:
                return False
            _measure(sizer, self._first)
        return True

    def results(self, session: Session, sizer: BatchSizer) -> Iterator[Any]:
        """The batch's values in order; raises the error of the item that failed."""
        first, self._first = self._first, None
        if first is None:
            first = next_item(session, self.call)
            _measure(sizer, first)
        marker, value = first
        if marker is END:  # failed as a whole: cancelled, timed out, server gone ...
            raise value or ProtocolError("a batch of map() ended without its results")
        _, values, failed = value
        yield from values
        if failed is not None:
            marker, error = next_item(session, self.call)
            raise error or ProtocolError("a failed item of map() came without its error")
