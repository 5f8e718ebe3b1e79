"""What a worker sends while a call runs: the call's numbered events, in order, and the
captured output batched between them (:class:`Outbound`), over the server channel or the
worker's own broker link."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import zmq

from zexec.adapters.transport_zmq.frames import send_frames
from zexec.apps.server.brokerlink import BrokerLink
from zexec.apps.server.crashlog import Spill
from zexec.core import protocol as p
from zexec.core.protocol import channel as ch
from zexec.core.protocol import legacy

#: Seconds a call the broker gave this worker runs before the server hears of it.
ANNOUNCE_AFTER = 0.05


class Call:
    """One running call: numbers its events and sends them, thread-safely, in order."""

    def __init__(self, out: Outbound, task_key: bytes, is_legacy: bool, call_id: bytes,
                 serializer: Any, client_id: bytes = b"") -> None:
        self.out = out
        self.task_key = task_key
        self.legacy = is_legacy
        self.call_id = call_id
        self.client_id = client_id
        self.serializer = serializer
        self.seq = 0
        self.started = time.monotonic()
        #: A call the broker gave this worker is made known to the server (``T``) only
        #: once it has run ANNOUNCE_AFTER; ``D`` follows only then: a busy ``.map`` of
        #: quick calls must not cost the server a message per call.
        self.from_broker = not task_key
        self.announced = False

    def announce(self) -> None:
        """Tell the server this broker-given call is running. The caller holds
        ``out.lock``."""
        send_frames(self.out.sock, ch.started(self.client_id, self.call_id, self.legacy))
        self.announced = True

    def send(self, kind: str, fields: dict[str, Any] | None = None, value: Any = None,
             has_value: bool = False, final: bool = False, extra: list[Any] | None = None,
             ) -> None:
        """Send one event. The caller holds ``out.lock``. Serializes before counting, so
        a value that fails to serialize leaves no gap in the sequence. ``extra`` frames
        follow the value's (v1 only; ``extra_at`` in the header says where they start)."""
        seq = self.seq + 1
        if self.legacy:
            body = [self._legacy_body(kind, seq, fields or {}, value)]
        else:
            buffers = self.serializer.dumps(value) if has_value else []
            if extra:
                fields = {**(fields or {}), "extra_at": len(buffers)}
                buffers = [*buffers, *extra]
            body = p.v1_event(self.call_id, kind, seq, fields, buffers)
        self.seq = seq
        if self.out.spill is not None:
            self.out.spill.sent(seq)
        broker = self.out.broker
        if broker is None:
            send_frames(self.out.sock, ch.output(self.task_key, final, body))
            return
        broker.send(self.client_id, self.call_id, final, body)
        if final and (self.announced or not self.from_broker):
            send_frames(self.out.sock, ch.done(self.task_key))

    @staticmethod
    def _legacy_body(kind: str, seq: int, fields: dict[str, Any], value: Any) -> bytes:
        import dill  # a legacy client reads dill; the value may need it

        return dill.dumps(legacy.legacy_event_for(kind, seq, fields, value))


class Outbound:
    """The worker's socket plus the output batcher that shares it.

    Captured stdout/stderr is kept as ordered (channel, text) segments and flushed as
    one event when ``flush_bytes`` accumulate, when ``flush_interval`` passes (a
    background thread), and always before any other event of the call, so output and
    yielded items keep their order.
    """

    def __init__(self, sock: zmq.Socket, flush_interval: float, flush_bytes: int,
                 parent: int | None = None, broker: BrokerLink | None = None,
                 spill: Spill | None = None) -> None:
        self.sock = sock
        self.broker = broker
        #: The running call's unsent output, where the server finds it if we die
        #: (:mod:`zexec.apps.server.crashlog`).
        self.spill = spill
        self.parent = os.getppid() if parent is None else parent
        self.lock = threading.Lock()
        self.flush_interval = flush_interval
        self.flush_bytes = flush_bytes
        self.call: Call | None = None
        self.segments: list[list[str]] = []
        self.pending = 0
        self.last_flush = time.monotonic()
        threading.Thread(target=self._flusher, daemon=True, name="zexec-flush").start()

    def write(self, channel: str, text: str) -> None:
        if not text:
            return
        with self.lock:
            if self.call is None:
                sys.__stderr__.write(text)  # output outside any call goes to the log
                return
            if self.segments and self.segments[-1][0] == channel:
                self.segments[-1][1] += text
            else:
                self.segments.append([channel, text])
            if self.spill is not None:
                self.spill.output(channel, text)
            self.pending += len(text)
            if self.pending >= self.flush_bytes:
                self._flush_locked()

    def _flush_locked(self) -> None:
        call = self.call
        if not self.segments or call is None:
            return
        segments, self.segments, self.pending = self.segments, [], 0
        self.last_flush = time.monotonic()
        if call.legacy:
            for channel, text in segments:
                call.send(p.EV_OUTPUT, {"channel": channel, "data": text})
        else:
            call.send(p.EV_OUTPUT, {"out": segments})
        if self.spill is not None:
            self.spill.flushed()

    def event(self, kind: str, fields: dict[str, Any] | None = None, value: Any = None,
              has_value: bool = False, final: bool = False,
              extra: list[Any] | None = None) -> None:
        with self.lock:
            self._flush_locked()
            assert self.call is not None
            self.call.send(kind, fields, value, has_value, final, extra)

    def _flusher(self) -> None:
        while True:
            time.sleep(self.flush_interval)
            if os.getppid() != self.parent:
                # The server died without killing us (OOM killer, kill -9 of the main
                # process alone): nobody will ever send work or read results.
                os._exit(1)
            with self.lock:
                now = time.monotonic()
                if self.segments and now - self.last_flush >= self.flush_interval:
                    self._flush_locked()
                call = self.call
                if call is not None and call.from_broker and not call.announced and \
                        now - call.started >= ANNOUNCE_AFTER:
                    call.announce()


class OutputStream:
    """Stands in for sys.stdout / sys.stderr during a call."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, out: Outbound, channel: str) -> None:
        self._out = out
        self._channel = channel

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._out.write(self._channel, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True
