"""The broker's loop: the gateway's connections around a :class:`Router`.

Ports: the client port (plain, for the released legacy clients and loopback), the
encrypted client port (TLS, same protocol), the backend (servers and their workers) and
the control port. This module is the policy the gateway asks for (its
:class:`~zexec.adapters.transport_zmtp.gateway.Handler`):

* **A client message's token is checked before the rest of the message is read.** A
  token the cache knows valid lets it through; one known invalid gets the message
  refused (its rest read and dropped, never held); an unknown one pauses the connection
  while one check per token runs in a thread pool, queued fairly by source address (at
  most ``checks_per_address`` waiting or running per address; beyond, ``BUSY``). A
  connection that tries more than ``failed_tokens_per_conn`` distinct failing tokens is
  answered and closed. So a flood of random tokens costs the identity provider one check
  per token at the flooder's share, and nobody else's calls wait for it.
* **A backend peer shows a server credential before it may send large frames**
  (``REG``, ``WRDY``, ``WRPL`` carry one); the router still checks every message.
* The router's outbox goes to the connections; a backend peer that is gone makes the
  message undeliverable (the router requeues a worker's call), as libzmq's
  ``ROUTER_MANDATORY`` did.
"""

from __future__ import annotations

import hmac
import logging
import os
import queue
import signal
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from zexec.adapters.transport_zmtp.conn import Conn
from zexec.adapters.transport_zmtp.decisions import ADMIT, WAIT, Decision, Discard
from zexec.adapters.transport_zmtp.gateway import Gateway, Limits
from zexec.core import protocol as p
from zexec.core.broker.router import FRONT, Router
from zexec.core.errors import (
    AuthError,
    AuthUnavailable,
    Busy,
    ProtocolError,
    Unauthenticated,
    ZexecError,
)
from zexec.core.fairqueue import FairQueue
from zexec.core.model import UserIdentity
from zexec.core.ports import Authenticator
from zexec.core.tokencache import token_key

log = logging.getLogger("zexec.broker")

TICK = 0.25
#: Seconds the last replies of a drain may take to leave before the process exits.
CLOSE_LINGER = 2.0


class Peer:
    """What the loop remembers about one client connection."""

    __slots__ = ("failed", "close_reason", "token", "token_key", "key")

    def __init__(self) -> None:
        self.failed: set[bytes] = set()  # keys of distinct tokens that failed
        self.close_reason = ""  # close once the current refusal is answered
        # The token frame this connection showed last and its hash: a client shows the
        # same token in every message, which then costs a comparison, not a SHA-256.
        self.token = b""
        self.token_key = b""
        self.key: bytes | None = None  # the current message's token key, for the router


class BrokerLoop:
    def __init__(
        self,
        router: Router,
        authenticator: Authenticator,
        host: str = "127.0.0.1",
        ports: tuple[int, int, int] = (5559, 5560, 5561),
        admin_token: str = "",
        auth_threads: int = 16,
        drain_timeout: float = 30.0,
        limits: Limits | None = None,
        tls: ssl.SSLContext | None = None,
        secure_port: int = 5562,
        failed_tokens_per_conn: int = 3,
        checks_per_address: int = 32,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.router = router
        self.authenticator = authenticator
        self.admin_token = admin_token.encode()
        self.drain_timeout = drain_timeout
        self.failed_tokens_per_conn = failed_tokens_per_conn
        self.clock = clock
        self.gw = Gateway(self, limits or Limits(), clock)
        self.ports = (self.gw.listen("front", host, ports[0]),
                      self.gw.listen("back", host, ports[1]),
                      self.gw.listen("control", host, ports[2]))
        self.secure_port = self.gw.listen("front", host, secure_port, tls) if tls else None
        self.auth_threads = auth_threads
        # Plain threads on a queue, started as checks need them: a ThreadPoolExecutor's
        # locks and semaphore cost the loop a fifth of its time under a token flood.
        self._jobs: queue.SimpleQueue[tuple[str, bytes, str] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._checks: FairQueue[tuple[bytes, str]] = FairQueue(checks_per_address)
        self._running = 0
        self._pending: set[bytes] = set()  # token keys queued or being checked
        self._waiting: dict[bytes, list[Conn]] = {}  # connections paused for a key
        self._results: queue.SimpleQueue[tuple[str, bytes, Any]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.gw.add_reader(self._wake_r, self._take_results)
        self._closing: list[tuple[Conn, str]] = []
        self._stop_requested = False
        self._drain_now = False
        self._drain_deadline: float | None = None
        self.ready = threading.Event()

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

    # ------------------------------------------------------------------ the gateway's handler

    def on_open(self, conn: Conn) -> None:
        conn.ext = Peer()

    def on_head(self, conn: Conn, frames: list[bytes]) -> Decision | None:
        try:
            return self._head(conn, frames)
        except Exception:  # one bad message must not stop routing
            log.exception("failed to look at a message's first frames; refused it")
            return Discard(ProtocolError("internal error"))

    def _head(self, conn: Conn, frames: list[bytes]) -> Decision | None:
        if conn.kind == "back":
            return self._backend_head(conn, frames)
        if conn.kind != "front":
            return None  # control messages are small: read whole, within the pre-auth budget
        if frames[0] != b"":
            return Discard(ProtocolError("missing empty delimiter frame"))
        pos = p.frontend_token_position(frames)
        if pos is None or len(frames) <= pos:
            return None
        peer: Peer = conn.ext
        raw = p.frame_bytes(frames[pos])
        try:
            token = p.token_of(raw)
        except ProtocolError as exc:
            return Discard(exc)
        if raw != peer.token:
            peer.token, peer.token_key = raw, token_key(token)
        peer.key = peer.token_key
        return self._admit(conn, token, peer.key)

    def _admit(self, conn: Conn, token: str, key: bytes) -> Decision:
        outcome = self.router.cache.get(key, self.gw.now)
        if outcome is not None:
            return self._verdict(conn, key, outcome)
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append(conn)
            return WAIT
        if key not in self._pending and not self._queue_check(conn.addr, key, token):
            self.gw.count("checks_refused")
            if not conn.authed:
                conn.ext.close_reason = "too many token checks pending from its address"
            return Discard(Busy("too many token checks are pending from your address; "
                                "retry shortly"))
        self._waiting[key] = [conn]
        return WAIT

    def _verdict(self, conn: Conn, key: bytes, outcome: Any) -> Decision:
        if isinstance(outcome, UserIdentity):
            return ADMIT
        if not isinstance(outcome, AuthUnavailable):
            peer: Peer = conn.ext
            peer.failed.add(key)
            if len(peer.failed) > self.failed_tokens_per_conn:
                self.gw.count("closed_for_bad_tokens")
                peer.close_reason = (f"more than {self.failed_tokens_per_conn} distinct "
                                     "invalid tokens")
        return Discard(outcome if isinstance(outcome, ZexecError) else Unauthenticated())

    def _backend_head(self, conn: Conn, frames: list[bytes]) -> Decision | None:
        if conn.authed:
            return ADMIT
        problem = p.backend_head_problem(frames)
        if problem is not None:
            return Discard(ProtocolError(problem))
        if len(frames) < 5:
            return None
        if self._backend_credential_ok(frames):
            return ADMIT
        return Discard(Unauthenticated("bad server credential"))

    def _backend_credential_ok(self, frames: list[Any]) -> bool:
        """``frames`` (from the delimiter on) carry a valid server credential."""
        found = p.backend_credential(frames)
        return found is not None and p.check_credential(self.router.secret, *found)

    def on_message(self, conn: Conn, frames: list[Any], refused: Any) -> None:
        now = self.gw.now
        try:
            if conn.kind == "front":
                key, conn.ext.key = conn.ext.key, None  # (None: its head had no token)
                if refused is None:
                    self.router.on_frontend(frames, now, key)
                else:
                    self.router.on_frontend_refused(frames, refused, now)
                    if conn.ext.close_reason:
                        self._closing.append((conn, conn.ext.close_reason))
            elif conn.kind == "back":
                if refused is None:
                    self.router.on_backend(frames, now)
                    if not conn.authed and (self.router.backend_peer_known(conn.rid) or
                                            self._backend_credential_ok(frames[1:])):
                        conn.admit()
                else:
                    self.router.on_backend_refused(frames, refused, now)
            else:
                self._on_control(frames)
        except Exception:  # one bad message must not stop routing
            log.exception("failed to handle a message; dropped it")

    def on_bytes(self, conn: Conn) -> None:
        if conn.kind == "back":
            self.router.on_backend_bytes(conn.rid, self.gw.now)

    def on_close(self, conn: Conn, reason: str) -> None:
        for conns in self._waiting.values():
            if conn in conns:
                conns.remove(conn)

    def busy_rids(self) -> set[bytes]:
        return self.router.peers_with_calls()

    # ------------------------------------------------------------------ token checks

    def _queue_check(self, source: str, key: bytes, token: str) -> bool:
        if not self._checks.push(source, (key, token)):
            return False
        self._pending.add(key)
        self._start_checks()
        return True

    def _start_checks(self) -> None:
        while self._running < self.auth_threads:
            item = self._checks.pop()
            if item is None:
                return
            source, (key, token) = item
            self._running += 1
            if len(self._threads) < self._running:  # (never more than auth_threads)
                thread = threading.Thread(target=self._check_loop, daemon=True,
                                          name=f"zexec-auth-{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
            self._jobs.put((source, key, token))

    def _check_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._check(*job)

    def _check(self, source: str, key: bytes, token: str) -> None:
        try:
            outcome: Any = self.authenticator.authenticate(token)
        except AuthError as exc:
            outcome = exc
        except Exception as exc:  # an adapter bug must not kill the pool thread
            log.error("authenticator failed: %s", type(exc).__name__)
            outcome = AuthUnavailable("identity check failed")
        self._results.put((source, key, outcome))
        self._wake()

    def _take_results(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        now = self.gw.now
        while True:
            try:
                source, key, outcome = self._results.get_nowait()
            except queue.Empty:
                break
            self._checks.done(source)
            self._running -= 1
            self._pending.discard(key)
            self.router.on_auth_result(key, outcome, now)
            for conn in self._waiting.pop(key, []):
                conn.decide(self._verdict(conn, key, outcome))
        self._start_checks()

    def _router_checks(self) -> None:
        """Checks the router asked for itself (a message that ended at its token, or a
        token that expired from the cache between the two looks)."""
        for key, token in self.router.take_auth_requests():
            if key in self._pending:
                continue
            conn = self.gw.by_rid.get(self.router.tokens.get(key, b""))
            source = conn.addr if conn is not None else "-"
            if not self._queue_check(source, key, token):
                self.router.on_auth_result(key, AuthUnavailable(
                    "too many token checks are pending from your address"), self.gw.now)

    # ------------------------------------------------------------------ output

    def _send_out(self) -> None:
        self._flush_outbox()
        for conn, reason in self._closing:
            conn.close(reason, flush=True)
        self._closing.clear()
        self.gw.flush()

    def _flush_outbox(self) -> None:
        gw = self.gw
        while out := self.router.take_outbox():  # sending may make more (see below)
            self._send_batch(gw, out)

    def _send_batch(self, gw: Gateway, out: list[tuple[str, list[Any]]]) -> None:
        for dest, frames in out:
            rid = frames[0]
            if dest == FRONT:
                if not gw.send(rid, "front", frames[1:]):
                    gw.count("dropped_front")
            elif not gw.send(rid, "back", frames[1:]) and rid not in gw.by_rid:
                # A server or worker that disconnected: a call meant for a worker goes
                # back to its queue (and what that makes the router send goes next).
                log.info("backend peer gone; message not delivered")
                try:
                    self.router.on_undeliverable(frames)
                except Exception:
                    log.exception("failed to requeue an undeliverable call")

    def _on_control(self, frames: list[Any]) -> None:
        rid = frames[0]
        req = p.parse_control_request(frames[1:])
        if req is None or not self.admin_token or \
                not hmac.compare_digest(req.token, self.admin_token):
            log.warning("refused an unauthenticated control command")
            reply = {"ok": False, "error": "forbidden: admin credential required"}
        elif req.command == p.STATUS:
            reply = {"ok": True, "status": self.status()}
        elif req.command == p.SERVER:
            if len(req.args) == 1:
                user = req.args[0].decode("utf-8", "replace")
                reply = {"ok": True, "server": self.router.server_info(user)}
            else:
                reply = {"ok": False, "error": "SERVER takes one argument, a user id"}
        elif req.command == p.TERMINATE:
            self.request_stop(drain=True)
            reply = {"ok": True, "message": "draining"}
        else:
            reply = {"ok": False, "error": f"unknown command {req.command[:32]!r}"}
        self.gw.send(rid, "control", p.control_reply(reply))

    def status(self) -> dict[str, Any]:
        """The router's status plus the gateway's: connections, memory, counters."""
        status = self.router.status()
        gw = self.gw
        status["gateway"] = {
            "connections": len(gw.conns),
            "preauth_bytes": gw.preauth_held,
            "payload_bytes": gw.budget.live,
            "token_checks": {"running": self._running, "queued": len(self._checks)},
            "counts": dict(gw.stats),
        }
        return status

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Route until stopped. Returns after draining (or the drain timeout)."""
        log.info("broker listening: frontend %d, backend %d, control %d", *self.ports)
        if self.secure_port is not None:
            log.info("encrypted (TLS) frontend on %d", self.secure_port)
        self.ready.set()
        router = self.router
        next_tick = self.clock() + TICK
        try:
            while True:
                due = min(next_tick, router.next_deadline)  # a call's timeout, maybe
                self.gw.poll(max(0.0, due - self.clock()))
                now = self.gw.now
                if router.auth_requests:
                    self._router_checks()
                if now >= due:
                    router.tick(now)
                    if now >= next_tick:
                        next_tick = now + TICK
                self._send_out()
                # A heavy connection's turn only after everyone else's messages are out.
                if self.gw.turn_heavy():
                    self._send_out()
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
        for _ in self._threads:
            self._jobs.put(None)
        # The last replies of a drain may still be queued: give them a moment to leave.
        deadline = time.monotonic() + CLOSE_LINGER
        gw = self.gw
        while any(c.wants_write for c in gw.conns.values()) and time.monotonic() < deadline:
            gw.flush()
            gw.poll(0.05)
        gw.close_all()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
