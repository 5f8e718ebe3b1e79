"""The broker's socket loop: three ROUTER sockets around a :class:`Router`.

Frontend (clients), backend (servers) and control (admin). Token checks run in a thread
pool; their outcomes come back through a queue and a wake-up pipe that the poller
watches, so the routing loop itself never blocks on the identity provider. Payload
frames are received and sent zero-copy and never deserialized.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq

from zexec.adapters.transport_zmq.frames import NOBLOCK, recv_frames, send_frames
from zexec.apps.broker.router import BACK, FRONT, Router
from zexec.core.errors import AuthError, AuthUnavailable
from zexec.core.ports import Authenticator
from zexec.core.protocol import frame_bytes

log = logging.getLogger("zexec.broker")

#: Messages taken from one socket before looking at the others (fairness vs. syscalls).
BATCH = 256
PLAIN, SECURE = b"P", b"S"
CLOSE_LINGER_MS = 2000
TICK = 0.25


def bind(sock: zmq.Socket, host: str, port: int) -> int:
    """Bind to ``host:port``; port 0 picks a free one. Returns the port bound."""
    if port == 0:
        return sock.bind_to_random_port(f"tcp://{host}")
    sock.bind(f"tcp://{host}:{port}")
    return port


class BrokerLoop:
    def __init__(
        self,
        router: Router,
        authenticator: Authenticator,
        host: str = "127.0.0.1",
        ports: tuple[int, int, int] = (5559, 5560, 5561),
        admin_token: str = "",
        auth_threads: int = 16,
        max_frame_bytes: int = -1,
        drain_timeout: float = 30.0,
        curve_secret_key: bytes = b"",
        secure_port: int = 5562,
        context: zmq.Context | None = None,
    ) -> None:
        self.router = router
        self.authenticator = authenticator
        self.admin_token = admin_token.encode()
        self.drain_timeout = drain_timeout
        # Our own context, terminated in close(): only that waits for the sockets' linger,
        # so the last replies of a drain leave before the process exits.
        self._own_context = context is None
        self.ctx = context or zmq.Context()
        self.front = self._socket(zmq.ROUTER)
        self.back = self._socket(zmq.ROUTER)
        self.control = self._socket(zmq.ROUTER)
        for s in (self.front, self.back, self.control):
            s.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
        # A server that vanished must surface as an error, not a silent drop.
        self.back.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.ports = (
            bind(self.front, host, ports[0]),
            bind(self.back, host, ports[1]),
            bind(self.control, host, ports[2]),
        )
        # The encrypted frontend (CurveZMQ): same protocol, for clients that know the
        # broker's public key. The plain one stays for the released legacy clients.
        self.secure: zmq.Socket | None = None
        self.secure_port: int | None = None
        if curve_secret_key:
            self.secure = self._socket(zmq.ROUTER)
            self.secure.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
            self.secure.curve_secretkey = curve_secret_key
            self.secure.curve_publickey = zmq.curve_public(curve_secret_key)
            self.secure.curve_server = True
            self.secure_port = bind(self.secure, host, secure_port)
        self._results: queue.SimpleQueue[tuple[bytes, Any]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._pool = ThreadPoolExecutor(auth_threads, thread_name_prefix="zexec-auth")
        self._stop_requested = False
        self._drain_now = False
        self._drain_deadline: float | None = None
        self.ready = threading.Event()

    def _socket(self, kind: int) -> zmq.Socket:
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, 100_000)
        s.setsockopt(zmq.RCVHWM, 100_000)
        return s

    # ------------------------------------------------------------------ control

    def request_stop(self, drain: bool = True) -> None:
        """Ask the loop to stop (thread- and signal-safe). With ``drain``, in-flight calls
        finish first (up to the drain timeout) and new ones are refused."""
        self._stop_requested = True
        self._drain_now = not drain
        self._wake()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.request_stop(drain=True))

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full: the loop is awake anyway

    # ------------------------------------------------------------------ auth

    def _check(self, key: bytes, token: str) -> None:
        try:
            outcome: Any = self.authenticator.authenticate(token)
        except AuthError as exc:
            outcome = exc
        except Exception as exc:  # an adapter bug must not kill the pool thread
            log.error("authenticator failed: %s", type(exc).__name__)
            outcome = AuthUnavailable("identity check failed")
        self._results.put((key, outcome))
        self._wake()

    def _start_checks(self) -> None:
        for key, token in self.router.auth_requests:
            self._pool.submit(self._check, key, token)
        self.router.auth_requests.clear()

    def _take_results(self, now: float) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                key, outcome = self._results.get_nowait()
            except queue.Empty:
                return
            self.router.on_auth_result(key, outcome, now)

    # ------------------------------------------------------------------ loop

    def _flush(self) -> None:
        out = self.router.outbox
        if not out:
            return
        for dest, frames in out:
            if dest == FRONT:
                # Client ids carry the tag of the socket they came in on (see _tagged).
                rid = frames[0]
                sock = self.secure if rid[:1] == SECURE else self.front
                frames[0] = rid[1:]
            else:
                sock = self.back
            try:
                send_frames(sock, frames, NOBLOCK)
            except zmq.Again:
                log.warning("dropped a message to a slow %s peer", dest)
            except zmq.ZMQError as exc:
                if dest == BACK and exc.errno == zmq.EHOSTUNREACH:
                    # A server or worker that disconnected: the router requeues a call
                    # meant for a worker (this loop then sends what that adds to
                    # ``out``); a server's heartbeats stop and its TTL drops it.
                    log.info("backend peer unreachable; message not delivered")
                    try:
                        self.router.on_undeliverable(frames)
                    except Exception:  # must not stop routing
                        log.exception("failed to requeue an undeliverable call")
                else:
                    raise
        out.clear()

    def _on_control(self, frames: list[Any]) -> None:
        rid = frames[0]
        parts = [frame_bytes(f) for f in frames[1:]]
        if parts and parts[0] == b"":
            parts = parts[1:]
        if len(parts) < 2 or not self.admin_token or \
                not hmac.compare_digest(parts[0], self.admin_token):
            log.warning("refused an unauthenticated control command")
            reply = {"ok": False, "error": "forbidden: admin credential required"}
        elif parts[1] == b"STATUS":
            reply = {"ok": True, "status": self.router.status()}
        elif parts[1] == b"TERMINATE":
            self.request_stop(drain=True)
            reply = {"ok": True, "message": "draining"}
        else:
            reply = {"ok": False, "error": f"unknown command {parts[1][:32]!r}"}
        send_frames(self.control, [rid, b"", json.dumps(reply).encode()])

    def run(self) -> None:
        """Route until stopped. Returns after draining (or the drain timeout)."""
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        # Client routing ids are tagged with their socket (P plain, S secure) so the two
        # frontends' id spaces can never collide, whatever identity a peer claims.
        self._inputs = [(self.back, self.router.on_backend, 11, b""),
                        (self.front, self.router.on_frontend, 7, PLAIN)]
        if self.secure is not None:
            poller.register(self.secure, zmq.POLLIN)
            self._inputs.append((self.secure, self.router.on_frontend, 7, SECURE))
        log.info("broker listening: frontend %d, backend %d, control %d", *self.ports)
        if self.secure_port is not None:
            log.info("encrypted (CurveZMQ) frontend on %d", self.secure_port)
        self.ready.set()
        next_tick = time.monotonic() + TICK
        try:
            while True:
                now = time.monotonic()
                due = min(next_tick, self.router.next_deadline)  # a call's timeout, maybe
                events = dict(poller.poll(max(0.0, due - now) * 1000))
                now = time.monotonic()
                if events.get(self._wake_r):
                    self._take_results(now)
                for sock, handle, small, tag in self._inputs:
                    if events.get(sock):
                        for _ in range(BATCH):
                            try:
                                frames = recv_frames(sock, NOBLOCK, small)
                            except zmq.Again:
                                break
                            if tag:
                                frames[0] = tag + frames[0]
                            try:
                                handle(frames, now)
                            except Exception:  # one bad message must not stop routing
                                log.exception("failed to handle a message; dropped it")
                            del frames  # a large payload must not outlive its message
                        self._flush()
                if events.get(self.control):
                    try:
                        self._on_control(recv_frames(self.control))
                    except Exception:
                        log.exception("failed to handle a control message")
                if self.router.auth_requests:
                    self._start_checks()
                if now >= due:
                    self.router.tick(now)
                    if now >= next_tick:
                        next_tick = now + TICK
                self._flush()
                if self._stop_requested and self._should_exit(now):
                    break
        finally:
            self.close()

    def _should_exit(self, now: float) -> bool:
        if not self.router.draining:
            self.router.start_draining()
            self._drain_deadline = now + self.drain_timeout
            log.info("draining: %d calls in flight", len(self.router.inflight))
        if self._drain_now or not self.router.busy:
            log.info("stopping: %d calls in flight; %s", len(self.router.inflight),
                     dict(self.router.stats))
            return True
        if self._drain_deadline is not None and now >= self._drain_deadline:
            log.warning("drain timeout: %d calls still in flight", len(self.router.inflight))
            return True
        return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        # The last replies of a drain may still sit in ZeroMQ's queues: give them a
        # moment to leave instead of discarding them (LINGER 0 did, losing results).
        for s in (self.front, self.secure):
            if s is not None:
                s.close(linger=CLOSE_LINGER_MS)
        for s in (self.back, self.control):
            s.close(0)
        if self._own_context:
            self.ctx.term()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
