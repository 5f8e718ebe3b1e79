"""The broker's gateway: every TCP port it binds, on one epoll loop, speaking ZMTP itself.

libzmq's ROUTER lets a peer choose its own routing id and aborts the process when that
id collides with one it generates later (libzmq 4.3.5, ``router_t::identify_peer``): any
peer that can reach a ROUTER port can crash it. So the broker owns its sockets. Every
connection gets a key from the broker (``b"\\x00"`` + a counter); on the backend, a peer's
``Identity`` (a worker's name, which its server uses in ``KILL`` and ``WGONE``) is a
logical name in this gateway's own map, unique among live connections (a second
connection with a name in use is refused) and never starting with a zero byte, so it
cannot collide with a key. Clients' identities are ignored.

The gateway is the mechanism; the policy (which token, which user) is the handler's
(:class:`Handler`). It enforces the limits of :class:`Limits`: pre-auth memory, frame size
and count, a payload budget for large frames, a fair share of reading per connection and
turn, idle and pre-auth timeouts, the peer's heartbeat TTL, peers that stop reading, and
running out of descriptors (stop accepting, evict the longest-idle connections, resume).
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import logging
import select
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from zexec.adapters.transport_zmtp.buffers import PayloadBudget
from zexec.adapters.transport_zmtp.conn import CLOSED, OPEN, Conn
from zexec.adapters.transport_zmtp.decisions import Decision
from zexec.adapters.transport_zmtp.stream import Stream, TlsStream
from zexec.core import zmtp

log = logging.getLogger("zexec.broker.gateway")

IN, OUT = select.EPOLLIN, select.EPOLLOUT
_BROKEN = select.EPOLLHUP | select.EPOLLERR
#: Seconds between sweeps for timeouts; and accepting pauses this long after EMFILE.
SWEEP = 1.0
ACCEPT_PAUSE = 0.25
#: Connections accepted per listener and turn (then the others get their turn), and
#: TLS handshakes driven per turn (each costs a signature).
ACCEPT_BATCH = 16
HANDSHAKES_PER_TURN = 8
#: Shares of a turn a heavy connection gets when no other one is waiting.
ALONE_SHARE = 8
#: Under descriptor pressure, connections idle at least this long (no call in flight)
#: are closed, the longest idle first, this many at a time.
EVICT_MIN_IDLE = 1.0
EVICT_BATCH = 32
_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True)
class Limits:
    """What one peer, and all unauthenticated peers together, may cost the broker
    (settings: ``ZEXEC_BROKER_*``, see the README and docs/security.md)."""

    preauth_bytes: int = 64 * 1024
    preauth_total_bytes: int = 64 * 1024 * 1024
    preauth_timeout: float = 10.0
    max_frame_bytes: int = 2 * 1024**3
    max_frames: int = 4096
    max_payload_bytes: int = 4 * 1024**3
    max_output_bytes: int = 256 * 1024 * 1024
    idle_timeout: float = 300.0
    write_timeout: float = 60.0
    #: Frames before the token/credential are at most this large (a token's limit).
    head_frame_max: int = 16 * 1024
    inline_max: int = 64 * 1024
    read_chunk: int = 256 * 1024
    #: Fair share per connection and loop turn.
    turn_bytes: int = 128 * 1024
    turn_frames: int = 64
    #: A client with this much output unread is not read from until half is gone.
    out_pause_bytes: int = 8 * 1024 * 1024


class Handler(Protocol):
    """The broker's side of the gateway (see :mod:`zexec.adapters.transport_zmtp.
    broker_loop`). ``conn.rid`` is what to route by; ``conn.kind`` the listener's kind."""

    def on_open(self, conn: Conn) -> None: ...

    def on_head(self, conn: Conn, frames: list[bytes]) -> Decision | None:
        """The first frames of a message so far (with the delimiter): a decision, or
        None to see one more frame."""

    def on_message(self, conn: Conn, frames: list[Any], refused: Any) -> None:
        """``[rid, *frames]``; ``refused``: None, or the ``why`` of a :class:`Discard`."""

    def on_bytes(self, conn: Conn) -> None: ...

    def on_close(self, conn: Conn, reason: str) -> None: ...

    def busy_rids(self) -> set[bytes]:
        """Routing ids that must not be closed as idle (calls in flight)."""


@dataclass
class Listener:
    sock: socket.socket
    kind: str
    port: int
    tls: ssl.SSLContext | None


class Gateway:
    def __init__(self, handler: Handler, limits: Limits, clock: Callable[[], float]) -> None:
        self.handler = handler
        self.limits = limits
        self.clock = clock
        self.now = clock()
        self.epoll = select.epoll()
        self.listeners: dict[int, Listener] = {}
        self.readers: dict[int, Callable[[], None]] = {}
        self.conns: dict[int, Conn] = {}
        self.by_rid: dict[bytes, Conn] = {}
        self.kicks: set[Conn] = set()
        self.heavy: deque[Conn] = deque()  # connections with more than a turn's worth
        self.dirty: set[Conn] = set()
        self.budget_waiters: set[Conn] = set()
        self.memory_waiters: set[Conn] = set()
        self.preauth_held = 0
        self.handshakes_left = HANDSHAKES_PER_TURN
        self.budget = PayloadBudget(limits.max_payload_bytes, on_free=self._memory_freed)
        self._memory_free = False
        self.scratch = memoryview(bytearray(1 << 20))  # where skipped bodies go
        self._keys = itertools.count(1)
        self._accepting = True
        self._accept_at = 0.0
        self._next_sweep = self.now + SWEEP
        self.stats: dict[str, int] = {}

    # ------------------------------------------------------------------ setup

    def listen(self, kind: str, host: str, port: int, tls: ssl.SSLContext | None = None) -> int:
        """Listen for ``kind`` peers on ``host:port`` (0: any free port); returns the port."""
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(4096)
        sock.setblocking(False)
        bound = sock.getsockname()[1]
        self.listeners[sock.fileno()] = Listener(sock, kind, bound, tls)
        self.epoll.register(sock.fileno(), IN)
        return bound

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.readers[fd] = callback
        self.epoll.register(fd, IN)

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    # ------------------------------------------------------------------ the loop

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for I/O and process it (reads and accepts;
        writes happen in :meth:`flush`), except heavy connections' (:meth:`turn_heavy`)."""
        if self.kicks or self.heavy or self._memory_free:
            timeout = 0.0
        events = self.epoll.poll(timeout)
        self.now = self.clock()
        self.handshakes_left = HANDSHAKES_PER_TURN
        for fd, ev in events:
            conn = self.conns.get(fd)
            if conn is not None:
                if ev & _BROKEN and conn.paused:
                    conn.close("connection reset")  # epoll reports it even when paused
                    continue
                if ev & OUT:
                    self.dirty.add(conn)
                if ev & ~OUT and conn.state != CLOSED and not conn.paused:
                    if conn.heavy:
                        self.queue_heavy(conn)
                    else:
                        conn.pump()
            elif fd in self.listeners:
                self._accept(self.listeners[fd])
            elif fd in self.readers:
                self.readers[fd]()
        if self._memory_free:
            self._memory_free = False
            self._wake(self.memory_waiters, "memory")
        kicked, self.kicks = self.kicks, set()
        for conn in kicked:
            if conn.state != CLOSED and not conn.paused:
                conn.pump()
        if self.now >= self._next_sweep:
            self._sweep()

    def turn_heavy(self) -> bool:
        """One turn of one heavy connection, in rotation (call it after :meth:`poll` and
        after what that produced has been sent): everyone else's messages never wait
        for more than one such turn, and when nobody else has anything to say the
        heavy ones take turns as fast as the loop goes. False if none was waiting."""
        heavy = self.heavy
        while heavy:
            conn = heavy.popleft()
            conn.queued = False
            if conn.state != CLOSED and not conn.paused:
                # Alone (one large transfer, nobody else waiting): longer turns, fewer
                # loop rounds; the next light message still waits only for this one.
                conn.pump(ALONE_SHARE if not heavy and not self.kicks else 1)
                return True
        return False

    def flush(self) -> None:
        """Write what is queued, to every connection that has something."""
        while self.dirty:
            dirty, self.dirty = self.dirty, set()
            for conn in dirty:
                if conn.state != CLOSED:
                    conn.flush()

    def send(self, rid: bytes, kind: str, frames: list[Any]) -> bool:
        """Queue ``frames`` to the connection ``rid`` of ``kind``; False if there is none
        (it closed) or the message was dropped."""
        conn = self.by_rid.get(rid)
        if conn is None or conn.kind != kind:
            return False
        return conn.send(frames)

    # ------------------------------------------------------------------ connections

    def _accept(self, lst: Listener) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = lst.sock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self._out_of_descriptors(exc)
                elif exc.errno != errno.ECONNABORTED:
                    log.warning("accept failed on port %d: %s", lst.port, exc)
                return
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            except OSError:
                pass
            stream = (TlsStream(sock, lst.tls, server_side=True) if lst.tls is not None
                      else Stream(sock))
            key = b"\x00" + next(self._keys).to_bytes(8, "big")
            conn = Conn(self, stream, lst.kind, key, _source(addr), self.now)
            self.conns[conn.fd] = conn
            self.epoll.register(conn.fd, IN)
            conn.mask = IN
            self.dirty.add(conn)  # the greeting

    def on_ready(self, conn: Conn, ready: zmtp.Ready) -> None:
        """The ZMTP handshake is complete: give the connection its routing id."""
        name = ready.identity
        if conn.kind == "back" and name:
            if name[0] == 0:
                self.count("reserved_identity")
                raise zmtp.ZmtpError("identities starting with a zero byte are reserved")
            if name in self.by_rid:
                self.count("duplicate_identity")
                raise zmtp.ZmtpError("this identity is connected already")
            conn.rid = name
        self.by_rid[conn.rid] = conn
        self.handler.on_open(conn)

    def queue_heavy(self, conn: Conn) -> None:
        if not conn.queued:
            conn.queued = True
            self.heavy.append(conn)

    def decide(self, conn: Conn, decision: Decision) -> None:
        conn.decide(decision)

    def update(self, conn: Conn) -> None:
        """Register the epoll interest ``conn`` needs now."""
        if conn.state == CLOSED:
            return
        mask = (0 if conn.paused else IN) | (OUT if conn.wants_write else 0)
        if mask != conn.mask:
            self.epoll.modify(conn.fd, mask)
            conn.mask = mask

    def closed(self, conn: Conn, reason: str) -> None:
        """Called by ``conn.close``: forget it."""
        self.conns.pop(conn.fd, None)
        try:
            self.epoll.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        if self.by_rid.get(conn.rid) is conn:
            del self.by_rid[conn.rid]
            self.handler.on_close(conn, reason)
        for waiting in (self.kicks, self.dirty, self.budget_waiters, self.memory_waiters):
            waiting.discard(conn)
        log.debug("closed %r: %s", conn, reason)
        if not self._accepting:
            self._accept_at = self.now  # a descriptor came free
        self.wake_budget_waiters()

    def close_all(self) -> None:
        for conn in list(self.conns.values()):
            conn.close("broker stopping")
        for lst in self.listeners.values():
            lst.sock.close()
        self.listeners.clear()
        self.epoll.close()

    # ------------------------------------------------------------------ budgets

    def preauth_room(self) -> int:
        return self.limits.preauth_total_bytes - self.preauth_held

    def wake_budget_waiters(self) -> None:
        if self.budget_waiters and self.preauth_room() > 0:
            self._wake(self.budget_waiters, "budget")

    def _memory_freed(self) -> None:
        # Runs wherever a buffer's last reference goes: only flag it here.
        self._memory_free = True

    def _wake(self, waiters: set[Conn], why: str) -> None:
        conns = list(waiters)
        waiters.clear()
        for conn in conns:
            conn.resume(why)

    # ------------------------------------------------------------------ time

    def _sweep(self) -> None:
        """Timeouts: pre-auth, heartbeat TTL, idle, peers not reading; and accepting
        again after running out of descriptors."""
        now = self.now
        self._next_sweep = now + SWEEP
        limits = self.limits
        busy: set[bytes] | None = None
        for conn in list(self.conns.values()):
            if conn.state == CLOSED:
                continue
            quiet = now - conn.last_rx
            if not conn.authed and now - conn.opened > limits.preauth_timeout and \
                    "auth" not in conn.paused:
                self.count("preauth_timeout")
                conn.close(f"no valid credential within {limits.preauth_timeout:g}s")
            elif conn.ttl and quiet > conn.ttl:
                self.count("ttl_expired")
                conn.close(f"silent beyond its heartbeat TTL of {conn.ttl:g}s")
            elif conn.out and now - conn.last_tx > limits.write_timeout:
                self.count("write_timeout")
                conn.close(f"not reading for {limits.write_timeout:g}s")
            elif quiet > limits.idle_timeout and conn.state == OPEN:
                if busy is None:
                    busy = self.handler.busy_rids()
                if conn.rid not in busy and not conn.in_body:
                    self.count("idle_closed")
                    conn.close(f"idle for {limits.idle_timeout:g}s")
        if not self._accepting and now >= self._accept_at:
            self._accepting = True
            for fd in self.listeners:
                self.epoll.register(fd, IN)
            log.info("accepting connections again (%d open)", len(self.conns))

    def _out_of_descriptors(self, exc: OSError) -> None:
        """Stop accepting (never spin on a listener we cannot accept from), keep serving,
        make room: the longest-idle connections without a call in flight go."""
        if self._accepting:
            self._accepting = False
            for fd in self.listeners:
                self.epoll.unregister(fd)
        self._accept_at = self.now + ACCEPT_PAUSE
        self._next_sweep = min(self._next_sweep, self._accept_at)
        self.count("out_of_descriptors")
        log.warning("out of file descriptors (%s, %d connections): not accepting for "
                    "now; closing the longest-idle connections", exc.strerror,
                    len(self.conns))
        busy = self.handler.busy_rids()
        # Peers that never showed a credential go first, then the longest idle.
        idle = sorted((c for c in self.conns.values() if c.state == OPEN and
                       c.rid not in busy and not c.in_body and
                       self.now - c.last_rx >= EVICT_MIN_IDLE),
                      key=lambda c: (c.authed, c.last_rx))
        for conn in idle[:EVICT_BATCH]:
            self.count("evicted")
            conn.close("evicted: the broker ran out of file descriptors")


def _source(addr: Any) -> str:
    """The address a peer's limits are counted by: its IP (for IPv6, its /64)."""
    host = addr[0] if isinstance(addr, tuple) else str(addr)
    if ":" in host:
        try:
            return str(ipaddress.ip_network(f"{host}/64", strict=False))
        except ValueError:
            return host
    return host
