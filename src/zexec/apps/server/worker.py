"""A warm worker process: runs calls one at a time and streams their events.

Started by the server (``python -m zexec.apps.server.worker ENDPOINT ID SERVER_PID``), it
connects a DEALER to the server's ipc ROUTER, says HELLO, gets its configuration
(output flush settings, the broker link), says READY, then loops over tasks. The frames
of that channel are :mod:`zexec.core.protocol.channel`.

**Direct dispatch** (CONFIG has a broker link, a pooled server): a second DEALER, with
the routing id the server chose, connects to the broker's backend and says ``WRDY`` (and
again every second while idle). The broker sends calls on it, in its backend layout, and
the worker sends the events back on it (``WRPL``, carrying the server's credential), so
neither arguments nor results pass through the server process. The server hears of a
call only when it has run ANNOUNCE_AFTER, and then when it ends (quick calls cost the
server nothing; it needs to know of the long ones to drain).

**Through the server** (fresh-process mode, or a broker that sends the server calls):
tasks come from the server, and their events go back to it, already in the client's
protocol (v1 event frames, or one legacy dill payload). Imports and deserialized functions stay warm between calls, which is the
point of a pool.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import signal
import sys
import threading
import time
import traceback
import types
from collections import OrderedDict
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zexec.adapters.serializer import default_registry
from zexec.adapters.transport_zmq.frames import NOBLOCK, recv_frames, send_frames
from zexec.apps.server import postmortem
from zexec.apps.server.crashlog import Spill, open_crash_files
from zexec.core import protocol as p
from zexec.core.errors import (
    ProtocolError,
    RemoteExit,
    SerializationError,
    UnknownSerializerError,
    ZexecError,
)
from zexec.core.protocol import channel as ch
from zexec.core.protocol import legacy

#: Seconds a call the broker gave this worker runs before the server hears of it.
ANNOUNCE_AFTER = 0.05
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
#: Milliseconds between WRDY messages while idle (a restarted broker learns us again),
#: and in the first seconds before any call came: a WRDY that reaches the broker before
#: our server's registration is ignored, and the first call must not wait a whole
#: interval for the next one.
READY_INTERVAL_MS = 1000
READY_FAST_MS, READY_FAST_FOR = 50, 3.0


class BrokerLink:
    """The worker's own connection to the broker, for v1 events (``WRPL``)."""

    def __init__(self, sock: Any, user_id: str, credential: str, monitor: Any = None) -> None:
        self.sock = sock
        self.user_id = user_id
        self.credential = credential
        self.monitor = monitor  # the socket's disconnect events (None in unit tests)
        self.reconnected = False

    def send(self, client_id: bytes, call_id: bytes, final: bool, body: list[Any]) -> None:
        self._send(p.worker_reply(self.user_id, self.credential, client_id, call_id, final,
                                  body))

    def ready(self) -> None:
        """Tell the broker this worker is idle (direct dispatch), and whether the
        connection broke since the last call (see :func:`zexec.core.protocol.worker_ready`)."""
        self._send(p.worker_ready(self.user_id, self.credential, self.reconnected))
        self.reconnected = False

    def watch(self) -> None:
        """Take the connection monitor's news (never blocks)."""
        while self.monitor.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            if recv_monitor_message(self.monitor)["event"] == zmq.EVENT_DISCONNECTED:
                self.reconnected = True

    def _send(self, frames: list[Any]) -> None:
        try:
            send_frames(self.sock, frames, NOBLOCK)
        except zmq.Again:
            # Only when the broker has been unreachable for a whole send queue: the
            # client's liveness check turns the call into an error.
            sys.__stderr__.write("zexec worker: broker unreachable; a message was dropped\n")


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


class _Stream:
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


class FunctionCache:
    """Deserialized functions by digest of their bytes: the same bytes are the same
    function, so ``.map`` and repeated calls skip unpickling it."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[bytes, Any] = OrderedDict()

    def get(self, serializer: Any, frame: Any) -> Any:
        data = memoryview(frame)
        key = hashlib.blake2b(data, digest_size=16).digest() + serializer.name.encode()
        fn = self._items.get(key)
        if fn is None:
            fn = serializer.loads([data])
            self._items[key] = fn
            if len(self._items) > self.size:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return fn


def _qualname(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _user_traceback(exc: BaseException) -> str:
    """The traceback without zexec's frames: the user's code is what matters."""
    tb = postmortem.first_user_frame(exc.__traceback__)
    return "".join(traceback.format_exception(type(exc), exc, tb))


class Worker:
    def __init__(self, sock: zmq.Socket, flush_interval: float, flush_bytes: int,
                 parent: int | None = None, broker: BrokerLink | None = None,
                 spill: Spill | None = None) -> None:
        self.out = Outbound(sock, flush_interval, flush_bytes, parent, broker, spill)
        self.registry = default_registry()
        self.functions = FunctionCache()
        self.stdout = _Stream(self.out, "stdout")
        self.stderr = _Stream(self.out, "stderr")

    def run(self) -> None:
        sock, link = self.out.sock, self.out.broker
        with self.out.lock:
            send_frames(sock, ch.ready())
        if link is None:
            while True:
                # No local name for the frames: the last call's payload must not stay
                # alive while the next one is being received (a 2x peak for large
                # arguments).
                self.execute(recv_frames(sock, copy_first=5))
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(link.sock, zmq.POLLIN)
        poller.register(link.monitor, zmq.POLLIN)
        with self.out.lock:
            link.ready()
        fast_until = time.monotonic() + READY_FAST_FOR
        while True:
            fast = time.monotonic() < fast_until
            events = dict(poller.poll(READY_FAST_MS if fast else READY_INTERVAL_MS))
            if events.get(link.monitor):
                link.watch()
                events.pop(link.monitor)
            if not events or link.reconnected:  # idle (a broken link: say so at once)
                with self.out.lock:
                    link.ready()
            if events.get(link.sock):
                fast_until = 0.0  # the broker knows us
                self.execute_direct(recv_frames(link.sock, copy_first=6))
            if events.get(sock):
                self.execute(recv_frames(sock, copy_first=5))

    def execute_direct(self, frames: list[Any]) -> None:
        """Run a call the broker sent: ``[b"", MAGIC, verb, client_id, call_key, user_id,
        *rest]``; the server hears of it if it runs longer than ANNOUNCE_AFTER."""
        try:
            msg = p.parse_server_bound(frames[1:])
        except ProtocolError:
            return  # not from a broker: only brokers know this connection
        verb, client_id, call_key = msg.verb, msg.client_id, msg.call_key
        if verb not in (p.CALL, p.LEGACY_CALL) or msg.user_id != self.out.broker.user_id:
            sys.__stderr__.write(f"zexec worker: ignored a {verb[:8]!r} message\n")
            return
        task = ch.task(ch.NO_TASK, verb == p.LEGACY_CALL, call_key, client_id, msg.rest)
        del frames, msg
        self.execute(task)

    def execute(self, frames: list[Any]) -> None:
        task = ch.parse_task(frames)
        del frames
        header, fn_frame, args_frames = task.header, task.fn, task.args
        try:
            serializer = self.registry.get("dill" if task.legacy else header.get("ser", ""))
        except UnknownSerializerError:
            serializer = None
        call = Call(self.out, task.key, task.legacy, task.call_id, serializer, task.client_id)
        call_id, client_id = task.call_id, task.client_id
        del task
        spill = self.out.spill
        with self.out.lock:
            self.out.call = call
            if spill is not None:
                spill.begin(call_id, client_id, call.legacy)
        try:
            self._run_call(call, header, fn_frame, args_frames)
        finally:
            with self.out.lock:
                self.out.segments, self.out.pending = [], 0
                self.out.call = None
                if spill is not None:
                    spill.end()

    def _run_call(self, call: Call, header: dict[str, Any], fn_frame: Any,
                  args_frames: list[Any]) -> None:
        out = self.out
        mismatch = None if call.legacy else p.python_mismatch(header, PYTHON)
        if mismatch is not None:
            out.event(p.EV_ERROR, {"code": "VERSION_MISMATCH", "message": mismatch,
                                   "type": "", "traceback": ""}, final=True)
            return
        if call.serializer is None:
            names = ", ".join(self.registry.names())
            out.event(p.EV_ERROR, {"code": "UNKNOWN_SERIALIZER",
                                   "message": f"serializer {header.get('ser')!r} is not "
                                              f"installed on the server; installed: {names}",
                                   "type": "", "traceback": ""}, final=True)
            return
        try:
            fn = self.functions.get(call.serializer, fn_frame)
            if call.legacy:
                args, kwargs = call.serializer.loads([args_frames[0]]), {}
            else:
                args, kwargs = call.serializer.loads(args_frames)
        except SerializationError as exc:
            out.event(p.EV_ERROR, {"code": "SERIALIZATION", "message": str(exc),
                                   "type": "", "traceback": ""}, final=True)
            return
        if call.legacy:
            out.event(legacy.START, {"function": getattr(fn, "__name__", "")})
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.stdout, self.stderr
        try:
            result = fn(*args, **kwargs)
            if inspect.isgenerator(result):
                for item in result:
                    out.event(p.EV_YIELD, value=item, has_value=True)
                result = None
        except BaseException as exc:  # the user's error, whatever it is, goes back
            sys.stdout, sys.stderr = saved
            self._send_error(call, exc)
            return
        finally:
            sys.stdout, sys.stderr = saved
        try:
            if call.legacy:
                out.event(p.EV_RETURN, value=result, has_value=True)
                out.event(legacy.END, final=True)
            else:
                out.event(p.EV_RETURN, value=result, has_value=True, final=True)
        except SerializationError as exc:
            out.event(p.EV_ERROR, {"code": "SERIALIZATION",
                                   "message": f"the return value cannot be sent back: {exc}",
                                   "type": "", "traceback": ""}, final=True)

    def _send_error(self, call: Call, exc: BaseException) -> None:
        tb = _user_traceback(exc)
        raised = exc  # its frames, for a post-mortem
        if not isinstance(exc, Exception):
            # SystemExit (sys.exit, exit()), KeyboardInterrupt, GeneratorExit: raised
            # there as themselves they would end the caller's program (or its loop).
            exc = RemoteExit.wrap(exc)
        fields = {
            "code": exc.code if isinstance(exc, ZexecError) and not isinstance(exc, RemoteExit)
            else "REMOTE_EXCEPTION",
            "message": f"{type(exc).__name__}: {exc}" if call.legacy else str(exc),
            "type": _qualname(exc),
            "traceback": tb,
        }
        extra = None if call.legacy else postmortem.attach(fields, raised, call.serializer)
        exc.__traceback__ = None  # tracebacks do not pickle; the text travels instead
        try:
            self.out.event(p.EV_ERROR, fields, value=exc, has_value=not call.legacy,
                           final=True, extra=extra)
        except SerializationError:
            self.out.event(p.EV_ERROR, fields, final=True, extra=extra)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        raise SystemExit("usage: python -m zexec.apps.server.worker ENDPOINT ID SERVER_PID")
    endpoint, worker_id, server_pid = args
    # Functions pickled from a client's __main__ (dill by default) resolve their globals
    # as this process's __main__: give them a clean one, not this module's namespace.
    sys.modules["__main__"] = types.ModuleType("__main__")
    # SIGTERM (the server stopping an idle worker) ends the loop normally, so the
    # sockets below close with their linger and the last events reach the broker.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, worker_id.encode())
    sock.setsockopt(zmq.LINGER, 1000)
    # The server may start this worker before it binds the endpoint: retry quickly.
    sock.setsockopt(zmq.RECONNECT_IVL, 10)
    sock.connect(endpoint)
    broker = None
    try:
        # The server's pid comes from the server itself: checking our parent at start-up
        # would miss a server that died while this worker was still importing.
        config = hello(sock, int(server_pid))
        broker = broker_link(ctx, config.get("broker"))
        Worker(sock, float(config["flush_interval"]), int(config["flush_bytes"]),
               int(server_pid), broker, open_crash_files(config.get("crash"))).run()
    finally:
        sock.close()
        if broker is not None:
            broker.sock.disable_monitor()
            broker.monitor.close(0)
            broker.sock.close()
        ctx.term()


def hello(sock: zmq.Socket, server_pid: int) -> dict[str, Any]:
    """Say HELLO and wait for the server's CONFIG (flush settings, broker link); exit if
    the server dies first (a server can start its first worker before reading its
    settings, and may then fail to start)."""
    send_frames(sock, ch.hello())
    while not sock.poll(500):
        if os.getppid() != server_pid:
            raise SystemExit(1)
    try:
        return ch.parse_config(recv_frames(sock))
    except ProtocolError as exc:
        raise SystemExit(f"zexec worker: {exc}") from None


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def broker_link(ctx: zmq.Context, broker: list[str] | None) -> BrokerLink | None:
    """The direct connection to the broker the server asked for (``[url, user id,
    credential, routing id]`` in CONFIG), or None (calls and events then go through the
    server)."""
    if not broker:
        return None
    url, user_id, credential, routing_id = broker
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, routing_id.encode())  # the server names us by it
    # A dead TCP connection is noticed at both ends (TTL: the broker drops it too, so
    # the reconnection, with the same routing id, is accepted) and replaced; the
    # monitor tells the worker it happened (its next WRDY says so).
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 3000)
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    # Queued (not dropped) until connected: a worker's first result may be ready before
    # its TCP connection is; LINGER lets the last events of a call leave on exit.
    sock.setsockopt(zmq.LINGER, 2000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    sock.connect(url)
    return BrokerLink(sock, user_id, credential, monitor)


if __name__ == "__main__":
    main()
