"""A warm worker process: runs calls one at a time and streams their events.

Started by the server (``python -m zexec.apps.server.worker ENDPOINT ID SERVER_PID``), it
connects a DEALER to the server's ipc ROUTER, says HELLO, gets its configuration
(output flush settings, the broker link), says READY, then loops over tasks. The frames
of that channel are :mod:`zexec.core.protocol.channel`.

**Direct dispatch** (CONFIG has a broker link, a pooled server): a second DEALER, with
the routing id the server chose, connects to the broker's backend and says ``WRDY`` (and
again every second while idle). The broker sends calls on it, in its backend layout, and
the worker sends the events back on it (``WRPL``, carrying the server's credential), so
neither arguments nor results pass through the server process
(:mod:`zexec.apps.server.brokerlink`). The server hears of a call only when it has run
:data:`~zexec.apps.server.outbound.ANNOUNCE_AFTER`, and then when it ends (quick calls cost
the server nothing; it needs to know of the long ones to drain).

**Through the server** (fresh-process mode, or a broker that sends the server calls):
tasks come from the server, and their events go back to it, already in the client's
protocol (v1 event frames, or one legacy dill payload; see
:mod:`zexec.apps.server.outbound`).

Imports and deserialized functions stay warm between calls, which is the point of a pool.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import signal
import sys
import time
import traceback
import types
from collections import OrderedDict
from typing import Any

import zmq

from zexec.adapters.serializer import default_registry
from zexec.adapters.transport_zmq.frames import recv_frames, send_frames
from zexec.apps.server import postmortem
from zexec.apps.server.brokerlink import BrokerLink, broker_link
from zexec.apps.server.crashlog import Spill, open_crash_files
from zexec.apps.server.outbound import Call, Outbound, OutputStream
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

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
#: Milliseconds between WRDY messages while idle (a restarted broker learns us again),
#: and in the first seconds before any call came: a WRDY that reaches the broker before
#: our server's registration is ignored, and the first call must not wait a whole
#: interval for the next one.
READY_INTERVAL_MS = 1000
READY_FAST_MS, READY_FAST_FOR = 50, 3.0


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
        self.stdout = OutputStream(self.out, "stdout")
        self.stderr = OutputStream(self.out, "stderr")

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


if __name__ == "__main__":
    main()
