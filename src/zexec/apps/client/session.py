"""One multiplexed connection from a client process to the broker.

All calls of a process share one transport. Whoever holds the session's I/O lock drives
it: a thread waiting for a plain call's result when nothing else is in flight drives it
itself (no hand-off between threads: the result is read by the thread that wants it),
otherwise the I/O thread does, while calling threads hand requests over through a queue
and wait on futures. The I/O thread sleeps while nothing is in flight. Whoever drives
also keeps the calls honest: it pings the broker while calls are in flight (the broker answers which
of them it still knows and whether the user's server is alive), so a dead broker, a
restarted broker or a dead server surfaces as an error within a bounded time instead of
a hang. Output events are written as they arrive to where the caller was when it
started the call (:mod:`zexec.apps.client.output`).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from zexec.apps.client.output import writer_here
from zexec.apps.client.pending import END, PendingCall, RemoteFuture
from zexec.apps.client.remote_errors import exception_from_event, unloadable_here
from zexec.apps.client.revival import Revival
from zexec.core import protocol as p
from zexec.core.errors import (
    BrokerUnreachable,
    CallCancelled,
    CallLost,
    CallTimeout,
    ProtocolError,
    SerializationError,
    ServerGone,
)
from zexec.core.model import Event
from zexec.core.ports import Serializer, Transport

log = logging.getLogger("zexec.client")

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
#: Extra seconds the client waits past a call's timeout for the server's own verdict.
TIMEOUT_GRACE = 2.0
#: How often the I/O thread looks for timed-out calls and due pings (seconds).
CHECK_INTERVAL = 0.05
#: Bytes per second the slowest transfer of an announced message is allowed (a loaded
#: machine, a slow link): 1 GiB may keep the line busy for 64 s before the broker counts
#: as gone.
TRANSFER_FLOOR_RATE = 16 << 20


class Session:
    def __init__(
        self,
        transport_factory: Callable[[], Transport],
        token: str,
        *,
        connect_timeout: float = 3.0,
        liveness_timeout: float = 3.0,
        ping_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not token:
            raise ValueError("a token is required to call remote functions")
        self.token = token
        self.connect_timeout = connect_timeout
        self.liveness_timeout = liveness_timeout
        self.ping_interval = ping_interval
        self.clock = clock
        self._transport_factory = transport_factory
        self._requests: queue.SimpleQueue[tuple[str, PendingCall | None, Any]] = \
            queue.SimpleQueue()
        self.pending: dict[bytes, PendingCall] = {}
        self._unsent: list[PendingCall] = []
        self._closed = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: Held by whoever drives the transport: the I/O thread, or a caller waiting for
        #: its own result (:meth:`call`). Only the holder touches the transport.
        self._io_lock = threading.Lock()
        self._has_work = threading.Event()  # wakes the parked I/O thread
        #: Calls whose result the calling thread read itself, and rounds of driving the
        #: connection so far (state, for tests and stats).
        self.inline_calls = 0
        self.rounds = 0
        #: Set by warm(): until when to keep trying to send the warm-up ping.
        self._warm_until: float | None = None
        self.transport: Transport | None = None
        self._last_heard = 0.0
        self._ping_sent: float | None = None
        #: Until when a big message the broker announced may keep the line busy (the
        #: pongs queue behind it): silence until then is a transfer, not a dead broker.
        self._transfer_until = 0.0
        self._next_ping = 0.0
        self._next_check = 0.0
        #: Calls refused because the server had stopped for idleness (see revival.py);
        #: a Connection sets its ``hook``.
        self.revival = Revival(self._send_again,
                               lambda call, err: self._hand_over("fail", call, err), clock)

    # ------------------------------------------------------------------ caller side

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                if self._closed:
                    raise RuntimeError("this zexec client is closed")
                self.transport = self._transport_factory()
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="zexec-client-io")
                self._thread.start()

    def start_call(
        self, fn_frame: Any, args: tuple, kwargs: dict, serializer: Serializer,
        timeout: float | None = None, stream: bool = False, name: str = "",
    ) -> PendingCall:
        """Send one call; returns its handle at once (the future resolves later).

        ``fn_frame`` is the function already serialized (in-band, one frame), so a
        ``map`` serializes it once for all its calls.
        """
        self._ensure_started()
        call = self._new_call(fn_frame, args, kwargs, serializer, timeout, stream, name)
        self._hand_over("call", call)
        return call

    def call(
        self, fn_frame: Any, args: tuple, kwargs: dict, serializer: Serializer,
        timeout: float | None = None, name: str = "",
    ) -> Any:
        """Run one call and return its value (or raise its error). When no other thread
        is driving the connection, this thread drives it until the result is in: the
        message goes out and the result is read here, with no hand-off to the I/O
        thread and back. Ctrl-C cancels the remote call."""
        self._ensure_started()
        call = self._new_call(fn_frame, args, kwargs, serializer, timeout, False, name)
        if not self._io_lock.acquire(blocking=False):
            self._hand_over("call", call)  # the I/O thread is busy with other calls
            return self.wait(call)
        try:
            try:
                if self._closed:
                    raise BrokerUnreachable("the zexec client was closed")
                self.inline_calls += 1
                self.pending[call.call_id] = call
                self._unsent.append(call)
                while not call.done:
                    self._pump()
            finally:
                self._io_lock.release()
                if self.pending or not self._requests.empty():
                    self._has_work.set()  # what is left is the I/O thread's again
        except KeyboardInterrupt:
            self.cancel(call, "keyboard_interrupt", wait=1.0)  # sent by the I/O thread
            raise
        return self.wait(call)  # done: returns or raises at once

    def warm(self) -> None:
        """Connect now and send one ping, in the background: the broker checks the token
        while the caller does other things, so the first call waits for neither."""
        self._ensure_started()
        self._hand_over("warm", None)

    def wait(self, call: PendingCall) -> Any:
        """Wait for ``call``'s result (driven by the I/O thread); Ctrl-C cancels it."""
        try:
            return call.future.result()
        except KeyboardInterrupt:
            self.cancel(call, "keyboard_interrupt", wait=1.0)
            raise

    def _new_call(
        self, fn_frame: Any, args: tuple, kwargs: dict, serializer: Serializer,
        timeout: float | None, stream: bool, name: str,
    ) -> PendingCall:
        header = {"ser": serializer.name, "py": PYTHON, "fn": name}
        if timeout is not None:
            header["timeout"] = timeout
        def frames_for(call_id: bytes) -> list[Any]:
            payload = serializer.dumps((args, kwargs))
            return p.v1_request(p.CALL, self.token, call_id,
                                [p.dump_header(header), fn_frame, *payload])

        call_id = os.urandom(p.CALL_ID_SIZE)
        frames = frames_for(call_id)
        fut = RemoteFuture()
        call = PendingCall(call_id, frames, serializer, fut, timeout, self.clock(),
                           queue.SimpleQueue() if stream else None, write=writer_here(),
                           rebuild=frames_for)
        fut._session, fut._call = self, call
        return call

    def _send_again(self, call: PendingCall) -> None:
        """Send ``call`` again under a new id (its server runs again: revival.py)."""
        assert call.rebuild is not None
        call.call_id = os.urandom(p.CALL_ID_SIZE)
        call.frames = call.rebuild(call.call_id)
        call.created = self.clock()
        self._hand_over("call", call)

    def _hand_over(self, kind: str, call: PendingCall | None, reason: Any = "") -> None:
        """Queue a request for whoever drives the connection, and make sure someone does."""
        self._requests.put((kind, call, reason))
        self._has_work.set()
        if self.transport is not None:
            self.transport.wake()

    def cancel(self, call: PendingCall, reason: str = "cancelled by the caller",
               wait: float = 0.0) -> None:
        """Ask the server to stop ``call`` (kills the worker running it). With ``wait``,
        block up to that many seconds until the request has left this process (after
        Ctrl-C the program may exit right away)."""
        if call.done or self._closed:
            return
        if call.cancel_sent is None:
            call.cancel_sent = threading.Event()
        self._hand_over("cancel", call, reason)
        if wait:
            call.cancel_sent.wait(wait)

    def close(self) -> None:
        """Fail calls still in flight and stop the I/O thread."""
        self._closed = True
        if self._thread is not None:
            self._has_work.set()
            self.transport.wake()
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------ I/O thread

    def _finish(self, call: PendingCall, value: Any = None,
                error: BaseException | None = None) -> None:
        if call.done:
            return
        call.done = True
        self.pending.pop(call.call_id, None)
        if call.items is not None:
            call.items.put((END, error))
        fut = call.future
        if fut.done():  # cancelled locally already
            return
        if error is None:
            fut.set_result(value)
        else:
            fut.set_exception(error)

    def _run(self) -> None:
        """The I/O thread: parked while nothing is in flight (or a caller drives the
        connection itself), else driving it until nothing is."""
        try:
            while not self._closed:
                self._has_work.wait()
                self._has_work.clear()
                with self._io_lock:
                    while not self._closed and (
                        self.pending or self._unsent or self._warm_until is not None
                        or not self._requests.empty()
                    ):
                        self._pump()
        except Exception:  # never leave callers hanging on a crashed I/O thread
            log.exception("zexec client I/O thread failed")
            raise
        finally:
            with self._io_lock:
                self._take_requests(self.clock())  # cancels asked for just before close
                err = BrokerUnreachable("the zexec client was closed")
                for call in list(self.pending.values()):
                    self._finish(call, error=err)
                self.transport.close()

    def _pump(self) -> None:
        """One round of driving the connection: take requests, send what waits, read
        what arrived (waiting a little if nothing did), check timeouts and liveness."""
        self.rounds += 1
        now = self.clock()
        self._take_requests(now)
        if self._unsent:
            self._send_unsent(now)
        if self._warm_until is not None and (
            self.transport.send(p.v1_ping(self.token, [])) or now > self._warm_until
        ):
            self._warm_until = None  # sent, or no connection within connect_timeout
        # Until the next look at timeouts and pings (a due ping is sent then): never 0
        # while calls are merely waiting, which would spin.
        wait = 0.02 if self._unsent or self._warm_until is not None \
            else max(0.0, min(self._next_check - now, 0.5))
        transport = self.transport
        msg = transport.recv(wait)
        count = 0
        while msg is not None:
            self._last_heard = self.clock()
            self._on_message(msg)
            count += 1
            if count >= 512:
                break
            msg = transport.recv(0)
        self._tick(self.clock())

    def _take_requests(self, now: float) -> None:
        while True:
            try:
                kind, call, reason = self._requests.get_nowait()
            except queue.Empty:
                return
            if kind == "call":
                if call.done:  # cancelled while it waited to be sent again
                    continue
                if self._closed:
                    self._finish(call, error=BrokerUnreachable("the zexec client was closed"))
                    continue
                self.pending[call.call_id] = call
                self._unsent.append(call)
            elif kind == "warm":
                self._warm_until = now + self.connect_timeout
            elif kind == "fail":
                self._finish(call, error=reason)
            else:  # cancel
                if call.done:
                    pass
                elif call.sent_at is None:  # not sent yet, or parked for a revival
                    if call in self._unsent:
                        self._unsent.remove(call)
                    self.revival.unpark(call)
                    self._finish(call, error=CallCancelled(reason))
                else:
                    self.transport.send(p.v1_request(p.CANCEL, self.token, call.call_id,
                                                     [reason.encode()[:256]]))
                if call.cancel_sent is not None:
                    call.cancel_sent.set()

    def _send_unsent(self, now: float) -> None:
        sent = 0
        for call in self._unsent:
            if call.done:
                sent += 1
                continue
            if not self.transport.send(call.frames):
                break
            call.sent_at = now
            call.frames = None  # the transport holds what it still needs
            sent += 1
        del self._unsent[:sent]
        for call in self._unsent:
            if now - call.created > self.connect_timeout:
                why = getattr(self.transport, "last_error", "")
                self._finish(call, error=BrokerUnreachable(
                    f"cannot reach the broker: no connection within {self.connect_timeout:g}s"
                    + (f" ({why})" if why else "")))
        self._unsent = [c for c in self._unsent if not c.done]

    def _tick(self, now: float) -> None:
        # Runs after every batch of messages; with a thousand pipelined calls in flight
        # the scan below is not free, and second-scale timeouts need no finer clock.
        if now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL
        in_flight = [c for c in self.pending.values() if c.sent_at is not None]
        if not in_flight:
            self._ping_sent = None
            return
        if self._ping_sent is not None and self._last_heard < self._ping_sent and \
                now - self._ping_sent > self.liveness_timeout and now > self._transfer_until:
            err = BrokerUnreachable(
                f"the broker stopped answering ({now - self._ping_sent:.1f}s without a reply)")
            for call in in_flight:
                self._finish(call, error=err)
            self._ping_sent = None
            return
        for call in in_flight:
            if call.timeout is not None and now - call.sent_at > call.timeout + TIMEOUT_GRACE:
                self.transport.send(p.v1_request(p.CANCEL, self.token, call.call_id,
                                                 [b"client timeout"]))
                self._finish(call, error=CallTimeout(
                    f"no answer within the call's timeout of {call.timeout:g}s"))
        if now >= self._next_ping:
            ids = [c.call_id for c in in_flight if not c.done]
            if ids:
                # A ping that cannot even be queued (no connection) counts as unanswered.
                self.transport.send(p.v1_ping(self.token, ids))
                if self._ping_sent is None or self._last_heard >= self._ping_sent:
                    self._ping_sent = now
            self._next_ping = now + self.ping_interval

    def _on_message(self, frames: list[Any]) -> None:
        try:
            if not frames or p.frame_bytes(frames[0]) != b"":
                raise ProtocolError("missing delimiter")
            msg = p.parse_client_bound(frames[1:])
            if isinstance(msg, dict):
                self._on_pong(msg)
            else:
                self._on_event(msg)
        except Exception as exc:  # a bad message must never kill the I/O thread
            log.warning("ignored a malformed message from the broker: %s", exc)

    def _on_pong(self, header: dict[str, Any]) -> None:
        incoming = header.get("incoming")
        if isinstance(incoming, int) and incoming > 0:
            self._transfer_until = max(self._transfer_until,
                                       self.clock() + incoming / TRANSFER_FLOOR_RATE)
        for hex_id in header.get("unknown", ()):
            call = self.pending.get(bytes.fromhex(hex_id))
            if call is not None and call.sent_at is not None and self._ping_sent is not None \
                    and call.sent_at <= self._ping_sent:
                self._finish(call, error=CallLost(
                    "the broker no longer knows this call (it restarted or the call was lost);"
                    " it may or may not have run"))

    def _on_event(self, ev: Event) -> None:
        call = self.pending.get(ev.call_id)
        if call is None:
            if ev.kind == p.EV_ERROR and not ev.call_id:
                log.warning("broker: %s", ev.header.get("message"))
            return
        kind = ev.kind
        if kind == p.EV_ERROR and self.revival.takes(call, ev.header.get("code")):
            del self.pending[call.call_id]
            self.revival.park(call, exception_from_event(ev, call.serializer))
            return
        call.rebuild = None  # the server has it: never to be sent again
        if kind == p.EV_OUTPUT:
            for channel, text in ev.header.get("out", ()):
                call.write(channel, text)
        elif kind == p.EV_YIELD or kind == p.EV_RETURN:
            try:
                value = call.serializer.loads(ev.buffers) if ev.buffers else None
            except SerializationError as exc:
                what = "the return value" if kind == p.EV_RETURN else "a yielded item"
                self._finish(call, error=unloadable_here(exc, what))
                return
            if kind == p.EV_RETURN:
                self._finish(call, value)
            elif call.items is not None:
                call.items.put((None, value))
        elif kind == p.EV_ERROR:
            err = exception_from_event(ev, call.serializer)
            if isinstance(err, ServerGone):
                err = ServerGone(f"{err} while the call was running")
            self._finish(call, error=err)
        elif kind == p.EV_CANCELLED:
            self._finish(call, error=CallCancelled(
                f"the call was cancelled ({ev.header.get('reason') or 'no reason given'})"))
