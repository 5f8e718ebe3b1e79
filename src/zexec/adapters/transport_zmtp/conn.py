"""One accepted connection of the broker's gateway: bytes -> ZMTP -> messages, and back.

A message is read in three modes. **HEAD**: its first frames, each at most
``head_frame_max`` bytes, until the gateway's handler has decided what the message may
be (:meth:`Handler.on_head`: the token or credential in those frames). **ADMITTED**: the
rest, large frames straight into buffers of their announced size, within the frame size
and count limits and the payload budget. **DISCARD**: a message refused before its end
(bad token, broken limit): the rest is read and dropped (large bodies through a shared
scratch buffer, never held); the handler gets its first small frames and empty
placeholders, to answer it.

A connection that has not shown a valid credential (``authed``) holds at most
``preauth_bytes`` (the codec's buffer plus the frames of its current message), within a
total for all such connections; it reads nothing while its token is being checked.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from zexec.adapters.transport_zmtp.buffers import size_text
from zexec.adapters.transport_zmtp.decisions import Admit, Decision, Discard, Wait
from zexec.adapters.transport_zmtp.output import Output
from zexec.adapters.transport_zmtp.stream import Stream, StreamClosed
from zexec.adapters.transport_zmtp.writing import CLOSED, HANDSHAKE, OPEN, Writing
from zexec.core import zmtp
from zexec.core.errors import ProtocolError, TooLarge, ZexecError

if TYPE_CHECKING:
    from zexec.adapters.transport_zmtp.gateway import Gateway

log = logging.getLogger("zexec.broker.gateway")

HEAD, ADMITTED, DISCARD = range(3)
#: In DISCARD mode, frames kept for the handler (the rest are counted, not kept) and
#: the largest kept as they are (larger ones become empty placeholders).
KEEP_FRAMES = 8
KEEP_BYTES = 256


class Conn(Writing):
    def __init__(self, gw: Gateway, stream: Stream, kind: str, key: bytes, addr: str,
                 now: float) -> None:
        self.gw = gw
        self.stream = stream
        self.fd = stream.fileno()
        self.kind = kind
        self.key = key
        self.rid = key  # the routing id the handler sees (see Gateway.on_ready)
        self.addr = addr
        self.codec = zmtp.Codec("ROUTER", as_server=True,
                                inline_max=gw.limits.inline_max)
        self.state = HANDSHAKE
        self.authed = False
        self.ext: Any = None  # the handler's per-connection state
        self.opened = self.last_rx = self.last_tx = now
        self.ttl = 0.0  # the peer's heartbeat TTL (seconds; 0: none)
        self.held = 0  # bytes counted against the pre-auth budget
        self.paused: set[str] = set()
        self.heavy = False  # had more than a turn's worth last time (see pump)
        self.queued = False  # in the gateway's queue of heavy connections
        self.mask = 0  # epoll interest registered
        self.close_after_flush = False
        # the message being read
        self.mode = HEAD
        self.frames: list[Any] = []
        self.nframes = 0
        self.msg_bytes = 0
        self.why: ZexecError | None = None
        self.body: memoryview | None = None  # a large frame's buffer (None: skipping)
        self.body_pos = 0
        self.body_more = False
        self.in_body = False
        self.drained = False  # the last read emptied the socket (see pump)
        self.waiting_start: zmtp.FrameStart | None = None
        # output
        self.out = Output()
        self.dropped = 0
        self.close_after_flush_reason = ""
        if not stream.tls:
            self.state = OPEN
        self._queue_raw(self.codec.data_to_send())

    def __repr__(self) -> str:
        return f"<conn {self.kind} {self.addr} {self.key.hex()}>"

    # ------------------------------------------------------------------ reading

    def pump(self, share: int = 1) -> None:
        """Read and process what arrived, up to ``share`` fair shares; the gateway calls
        again (a kick) if more may be waiting without the socket telling epoll."""
        gw = self.gw
        limits = gw.limits
        budget = limits.turn_bytes * share
        frames_left = limits.turn_frames * share
        received = 0
        # A read of small frames that got less than it asked for emptied the socket: the
        # next read would only raise BlockingIOError (a syscall and an exception per
        # wakeup). Stop there; epoll is level-triggered, so bytes that arrive meanwhile
        # wake us again. (Not after a large body's read: a stream of those keeps reading
        # in long turns, measured 2x faster for 100 MiB over TLS.)
        self.drained = False
        try:
            if self.state == HANDSHAKE:
                # A TLS handshake costs the loop a signature: a few per turn, the rest
                # wait their turn with the heavy connections.
                if gw.handshakes_left <= 0:
                    gw.queue_heavy(self)
                    return
                gw.handshakes_left -= 1
                if not self.stream.handshake():
                    return
                self.state = OPEN
                gw.dirty.add(self)  # our greeting, held back until TLS was up
            while not self.paused and self.state == OPEN and budget > 0 and frames_left > 0:
                if self.in_body:
                    if self.drained:
                        break
                    n = self._read_body()
                    if n is None:
                        break
                    budget -= n
                    received += n
                    continue
                if self.waiting_start is not None:
                    if not self._start_body(self.waiting_start):
                        break
                    continue
                if self.mode == ADMITTED:  # the rest of a message: its small frames at once
                    datas, ended = self.codec.message_frames(frames_left)
                    if datas:
                        frames_left -= len(datas)
                        self._admitted(datas, ended)
                        continue
                ev = self.codec.next_event()
                if ev is None:
                    if self.drained:
                        break
                    n = self._read_codec()
                    if n is None:
                        break
                    budget -= n
                    received += n
                    continue
                frames_left -= 1
                if type(ev) is zmtp.Frame:
                    self._frame(ev.data, ev.more)
                else:
                    self._event(ev)
            out = self.codec.data_to_send()
            if out:
                self._queue_raw(out)
        except zmtp.ZmtpError as exc:
            self._queue_raw(zmtp.error(str(exc)))
            self.close(f"protocol error: {exc}", flush=True)
        except StreamClosed as exc:
            self.close(str(exc))
        except Exception:  # a bug must cost one connection, never the broker
            log.exception("closing %r after an unexpected error", self)
            self.close("internal error")
        if received:
            self.last_rx = gw.now
            gw.handler.on_bytes(self)
        # A connection that had more than a turn's worth is heavy: served one turn at a
        # time after everyone else (see Gateway.poll), so it delays others by one turn.
        self.heavy = budget <= 0 or frames_left <= 0
        if self.state == OPEN and not self.paused:
            if self.heavy:
                gw.queue_heavy(self)
            elif self.stream.buffered:
                gw.kicks.add(self)

    def _read_codec(self) -> int | None:
        limits = self.gw.limits
        want = limits.read_chunk
        if not self.authed:
            room = min(limits.preauth_bytes - self.held, self.gw.preauth_room())
            if room <= 0:
                if self.held >= limits.preauth_bytes:
                    self.close(f"more than {limits.preauth_bytes} bytes before a valid "
                               "credential")
                else:
                    self.pause("budget")  # every unauthenticated peer together is at the cap
                    self.gw.budget_waiters.add(self)
                return None
            want = min(want, room)
        try:
            data = self.stream.recv(want)
        except BlockingIOError:
            return None
        if not data:
            self.close("closed by the peer")
            return None
        self.drained = len(data) < want and not self.stream.buffered
        self.codec.receive(data)
        if not self.authed:
            self._sync_held()
        return len(data)

    def _read_body(self) -> int | None:
        codec = self.codec
        if self.body is not None:
            view = self.body[self.body_pos:]
        else:
            view = self.gw.scratch[:min(codec.body_remaining, len(self.gw.scratch))]
        try:
            n = self.stream.recv_into(view)
        except BlockingIOError:
            return None
        if n == 0:
            self.close("closed by the peer in the middle of a frame")
            return None
        codec.body_received(n)
        self.body_pos += n
        if codec.body_remaining == 0:
            self._body_done()
        return n

    def _event(self, ev: zmtp.Event) -> None:
        if type(ev) is zmtp.FrameStart:
            self._start_body(ev)
        elif type(ev) is zmtp.Ready:
            self.gw.on_ready(self, ev)
        elif type(ev) is zmtp.Ping:
            if ev.ttl:
                self.ttl = ev.ttl
        elif type(ev) is zmtp.PeerError:
            self.close(f"the peer sent ERROR: {ev.reason[:80]}")

    def _start_body(self, ev: zmtp.FrameStart) -> bool:
        """Decide about a large frame from its header alone. False: wait for memory."""
        self.waiting_start = None
        limits = self.gw.limits
        if self.mode == HEAD:
            if not self.authed:
                self.close(f"a frame of {ev.size} bytes before a valid credential")
                return True
            self._discard(ProtocolError(
                f"a frame of {ev.size} bytes where the token belongs (at most "
                f"{limits.head_frame_max})"))
        elif self.mode == ADMITTED and ev.size > limits.max_frame_bytes:
            self._discard(TooLarge(
                f"a frame of {size_text(ev.size)} exceeds the broker's limit of "
                f"{size_text(limits.max_frame_bytes)} (ZEXEC_BROKER_MAX_FRAME_BYTES)"))
        self.in_body = True
        self.body_more = ev.more
        self.body_pos = 0
        if self.mode == DISCARD:
            self.body = None
            while self.codec.body_remaining and self.codec.read_body_into(self.gw.scratch):
                pass
        else:
            budget = self.gw.budget
            if not budget.fits(ev.size):
                self.in_body = False
                self.waiting_start = ev
                self.pause("memory")
                self.gw.memory_waiters.add(self)
                return False
            self.body = memoryview(budget.allocate(ev.size))
            self.body_pos = self.codec.read_body_into(self.body)
        if self.codec.body_remaining == 0:
            self._body_done()
        return True

    def _body_done(self) -> None:
        body, self.body = self.body, None
        self.in_body = False
        self._frame(b"" if body is None else body.obj, self.body_more)

    def _frame(self, data: Any, more: bool) -> None:
        self.nframes += 1
        limits = self.gw.limits
        if self.nframes > limits.max_frames and self.mode != DISCARD:
            self._discard(TooLarge(
                f"a message of more than {limits.max_frames} frames (the broker's limit, "
                "ZEXEC_BROKER_MAX_FRAMES)"))
        mode = self.mode
        if mode == ADMITTED:
            self.frames.append(data)
        elif mode == HEAD:
            size = len(data)
            if size > limits.head_frame_max:
                if not self.authed:
                    self.close(f"a frame of {size} bytes before a valid credential")
                    return
                self._discard(ProtocolError(
                    f"a frame of {size} bytes where the token belongs (at most "
                    f"{limits.head_frame_max})"))
                self._keep(data)
            else:
                self.frames.append(data)
                self.msg_bytes += size
                if more:
                    self._apply(self.gw.handler.on_head(self, self.frames))
        else:
            self._keep(data)
            if not self.authed and self.nframes > limits.max_frames:
                self.close(f"a message of more than {limits.max_frames} frames before a "
                           "valid credential")
                return
        if not more and self.state == OPEN:
            self._deliver()

    def _admitted(self, datas: list[bytes], ended: bool) -> None:
        """Small frames of an admitted message (``ended``: the last one ends it)."""
        if self.nframes + len(datas) > self.gw.limits.max_frames:
            last = len(datas) - 1  # the limit breaks in here: frame by frame
            for i, data in enumerate(datas):
                self._frame(data, i < last or not ended)
            return
        self.nframes += len(datas)
        self.frames += datas
        if ended and self.state == OPEN:
            self._deliver()

    def _keep(self, data: Any) -> None:
        n = len(self.frames)
        if n < KEEP_FRAMES:
            kept = data if len(data) <= KEEP_BYTES else b""
            self.frames.append(kept)
            self.msg_bytes += len(kept)
        elif n == KEEP_FRAMES:
            self.frames.append(b"")  # "and more"

    def _discard(self, why: ZexecError) -> None:
        self.mode = DISCARD
        self.why = why
        kept = [f if len(f) <= KEEP_BYTES else b"" for f in self.frames[:KEEP_FRAMES]]
        if len(self.frames) > KEEP_FRAMES:
            kept.append(b"")
        self.frames = kept
        self.msg_bytes = sum(len(f) for f in kept)

    def _apply(self, decision: Decision | None) -> None:
        if decision is None:
            return
        if type(decision) is Admit:
            self.admit()
            self.mode = ADMITTED
        elif type(decision) is Wait:
            self.pause("auth")
        elif type(decision) is Discard:
            self._discard(decision.why)
        else:
            self.close(decision.reason, flush=True)

    def decide(self, decision: Decision) -> None:
        """The handler's late answer to a :class:`Wait`."""
        if self.state == CLOSED:
            return
        self.resume("auth")
        self._apply(decision)

    def _deliver(self) -> None:
        frames, why = self.frames, self.why if self.mode == DISCARD else None
        self.frames = []
        self.nframes = self.msg_bytes = 0
        self.mode = HEAD
        self.why = None
        if not self.authed:
            self._sync_held()
        self.gw.handler.on_message(self, [self.rid, *frames], why)

    # ------------------------------------------------------------------ accounting

    def _sync_held(self) -> None:
        held = self.codec.buffered + self.msg_bytes
        self.gw.preauth_held += held - self.held
        self.held = held

    def admit(self) -> None:
        """This peer showed a valid credential: the pre-auth budget no longer applies."""
        if not self.authed:
            self.authed = True
            self.gw.preauth_held -= self.held
            self.held = 0
            self.gw.wake_budget_waiters()

    def pause(self, why: str) -> None:
        self.paused.add(why)
        self.gw.update(self)

    def resume(self, why: str) -> None:
        if why in self.paused:
            self.paused.discard(why)
            self.gw.update(self)
            if not self.paused:
                self.gw.kicks.add(self)

    # ------------------------------------------------------------------ closing

    def close(self, reason: str, flush: bool = False) -> None:
        """Close now, or (``flush``) once what is queued has left (a refusal, an ERROR)."""
        if self.state == CLOSED:
            return
        if flush and self.wants_write and self.state == OPEN:
            self.close_after_flush = True
            self.close_after_flush_reason = reason
            self.paused.add("closing")
            self.gw.update(self)
            return
        self.state = CLOSED
        if not self.authed:
            self.gw.preauth_held -= self.held
            self.held = 0
        self.frames = []
        self.body = None
        self.out.clear()
        self.gw.closed(self, reason)
        self.stream.close()

