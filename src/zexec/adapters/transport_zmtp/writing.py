"""The writing side of one broker connection (:class:`~zexec.adapters.transport_zmtp.
conn.Conn`): queueing messages within the peer's output limit, and flushing them."""

from __future__ import annotations

import logging
from typing import Any

from zexec.adapters.transport_zmtp.stream import StreamClosed

log = logging.getLogger("zexec.broker.gateway")

#: A connection's states (TLS handshake, open, closed).
HANDSHAKE, OPEN, CLOSED = range(3)


class Writing:
    """A mixin of :class:`~zexec.adapters.transport_zmtp.conn.Conn` (its attributes)."""

    gw: Any
    out: Any
    stream: Any
    state: int
    kind: str
    paused: set[str]
    dropped: int
    last_tx: float
    close_after_flush: bool
    close_after_flush_reason: str

    def _queue_raw(self, data: bytes) -> None:
        if data:
            self._started_writing()
            self.out.add(data)
            self.gw.dirty.add(self)

    def _started_writing(self) -> None:
        if not self.out:
            self.last_tx = self.gw.now  # the clock of a stalled write starts now

    def send(self, frames: list[Any]) -> bool:
        """Queue one message (never blocks). False if it was dropped: the connection is
        closed, or its peer leaves more than ``max_output_bytes`` unread (one message
        is always taken)."""
        if self.state == CLOSED:
            return False
        limits = self.gw.limits
        if self.out.bytes > limits.max_output_bytes:
            self.dropped += 1
            log.warning("dropped a message to a peer that does not read (%s)", self.kind)
            return False
        self._started_writing()
        self.out.add_message(frames)
        self.gw.dirty.add(self)
        if self.kind != "back" and self.out.bytes > limits.out_pause_bytes:
            self.pause("output")  # take no more requests from a peer not reading replies
        return True

    def flush(self) -> None:
        if self.state == HANDSHAKE:
            if self.stream.wants_write:
                self.stream.flush()
            return
        try:
            if self.out.write(self.stream):
                self.last_tx = self.gw.now
        except StreamClosed as exc:
            self.close(str(exc))
            return
        except Exception:  # a bug must cost one connection, never the broker
            log.exception("closing %r after an unexpected error while writing", self)
            self.close("internal error")
            return
        if "output" in self.paused and self.out.bytes <= self.gw.limits.out_pause_bytes // 2:
            self.resume("output")
        if self.close_after_flush and not self.out and not self.stream.wants_write:
            self.close(self.close_after_flush_reason)
            return
        self.gw.update(self)

    @property
    def wants_write(self) -> bool:
        return bool(self.out) or self.stream.wants_write
