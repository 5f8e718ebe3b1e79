"""The SDK's connection to the broker: ZMTP over TCP (``tcp://``) or TLS (``tls://``).

A :class:`~zexec.core.ports.Transport` with no thread of its own: whoever calls ``send``
or ``recv`` (the session's I/O thread, or a caller driving its own call) moves the bytes,
so a result is read by the thread that wants it, with no hand-off. It connects in the
background of those calls and reconnects after a failure (100 ms, doubling to 1 s; at
once when a connection that was up a while ends);
``send`` returns False while no connection is up, and first notices a connection the
broker closed (idle) so a call never goes out on a dead one. While ``recv`` waits, a
connection silent for a second gets a ZMTP ``PING``; one that stays silent 3 s more is
replaced. Large frames arrive straight into buffers of their size (one copy) and leave
from the caller's own buffers (none).

TLS: with ``tls_pin`` (the SHA-256 of the broker's certificate, which ``zexec.connect``
takes from ``/broker-config``) exactly that certificate is accepted, whoever signed it;
without, the system's CAs and the host name are checked. Nothing is sent before.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import select
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from zexec.adapters.transport_zmtp.buffers import allocate
from zexec.adapters.transport_zmtp.output import Output
from zexec.adapters.transport_zmtp.stream import Stream, StreamClosed, TlsStream
from zexec.adapters.transport_zmtp.tls import client_context
from zexec.core import zmtp

RECONNECT_MIN, RECONNECT_MAX = 0.1, 1.0
#: A connection up this long that ends (the broker closed it as idle, or restarted) is
#: replaced at once: a notebook's first call after a pause waits for no back-off.
STABLE_AFTER = 1.0
HEARTBEAT_IVL, HEARTBEAT_TIMEOUT = 1.0, 3.0
#: How long close() lets queued messages (a last cancel) leave.
CLOSE_LINGER = 0.5
READ_CHUNK = 256 * 1024
#: Small frames taken from the codec at once.
READ_FRAMES = 256

_DOWN, _CONNECTING, _HANDSHAKE, _UP = range(4)


def parse_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of ``tcp://host:port`` or ``tls://host:port``."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or not parts.port:
        raise ValueError(f"broker URL must be tcp://host:port or tls://host:port, not {url!r}")
    return parts.scheme, parts.hostname, parts.port


def normalize_pin(pin: str) -> bytes:
    """A certificate pin as 32 bytes, from hex (``ab12...``, ``AB:12:...``, optionally
    prefixed ``sha256:``)."""
    text = pin.strip().lower().removeprefix("sha256:").replace(":", "")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ValueError("a TLS pin is the SHA-256 of the broker's certificate: 64 hex digits")
    return raw


class ZmtpTransport:
    """:class:`~zexec.core.ports.Transport` to ``url`` (see the module docstring)."""

    def __init__(self, url: str, *, tls_pin: str | None = None,
                 tls_context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        scheme, self.host, self.port = parse_url(url)
        self.tls = scheme == "tls"
        self._pin = normalize_pin(tls_pin) if tls_pin else None
        self._ctx = tls_context or (client_context(self._pin is not None) if self.tls
                                    else None)
        self.clock = clock
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._state = _DOWN
        self._sock: socket.socket | None = None
        self._stream: Stream | None = None
        self._codec: zmtp.Codec | None = None
        self._next_attempt = 0.0
        self._backoff = RECONNECT_MIN
        self._up_since = 0.0
        self.inbox: deque[list[Any]] = deque()
        self._frames: list[Any] = []
        self._body: memoryview | None = None
        self._body_pos = 0
        self._body_more = False
        self._out = Output()
        self._last_rx = 0.0
        self._ping_at: float | None = None
        #: Why the last connection attempt or connection failed (for error messages).
        self.last_error = ""
        self._closed = False
        self._progress()

    @property
    def connected(self) -> bool:
        return self._state == _UP

    # ------------------------------------------------------------------ the port

    def send(self, frames: Sequence[Any]) -> bool:
        self._progress()
        if self._state != _UP:
            return False
        self._out.add_message(frames)
        self._write()
        return self._state == _UP

    def recv(self, timeout: float) -> list[Any] | None:
        if self.inbox:
            return self.inbox.popleft()
        deadline = self.clock() + timeout
        was_up = self._state == _UP
        while True:
            self._progress()
            if self.inbox:
                return self.inbox.popleft()
            if self._state == _UP and not was_up:
                return None  # just connected: the caller has messages waiting to go
            now = self.clock()
            if now >= deadline:
                return None
            if self._wait(min(deadline, self._next_timer(now)) - now):
                return None  # woken by another thread

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # full (awake anyway) or closed

    def close(self) -> None:
        if self._closed:
            return
        deadline = self.clock() + CLOSE_LINGER
        while self._state == _UP and self._wants_write() and self.clock() < deadline:
            self._wait(0.05)
            self._write()
        self._closed = True
        self._disconnect("closed")
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    # ------------------------------------------------------------------ waiting

    def _wants_write(self) -> bool:
        return bool(self._out) or (self._stream is not None and self._stream.wants_write)

    def _next_timer(self, now: float) -> float:
        if self._state == _DOWN:
            return self._next_attempt
        if self._state == _UP:
            if self._ping_at is not None:
                return self._ping_at + HEARTBEAT_TIMEOUT
            return self._last_rx + HEARTBEAT_IVL
        return now + 0.05  # connecting: look again soon (and on socket events)

    def _wait(self, timeout: float) -> bool:
        """Wait for the socket, a wake-up or ``timeout``; True if woken."""
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        if self._sock is not None and self._state != _DOWN:
            mask = select.POLLIN
            if self._state == _CONNECTING or self._wants_write():
                mask |= select.POLLOUT
            poller.register(self._sock.fileno(), mask)
        woken = False
        for fd, _ in poller.poll(max(0.0, timeout) * 1000):
            if fd == self._wake_r:
                woken = True
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
        return woken

    # ------------------------------------------------------------------ the connection

    def _progress(self) -> None:
        """Move the connection on as far as it goes without blocking."""
        if self._closed:
            return
        try:
            if self._state == _DOWN:
                if self.clock() >= self._next_attempt:
                    self._connect()
            if self._state == _CONNECTING:
                self._check_connected()
            if self._state == _HANDSHAKE and self._stream is not None:
                if self._stream.handshake():
                    self._check_pin()
                    self._write()
                    self._read()
            elif self._state == _UP:
                self._write()
                self._read()
                self._heartbeat()
        except (StreamClosed, zmtp.ZmtpError, OSError) as exc:
            self._disconnect(str(exc) or type(exc).__name__)

    def _connect(self) -> None:
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(addr)
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            sock.close()
            raise OSError(code, os.strerror(code))
        self._sock = sock
        self._state = _CONNECTING

    def _check_connected(self) -> None:
        assert self._sock is not None
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLOUT)
        if not poller.poll(0):
            return
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, f"cannot connect to {self.host}:{self.port}: "
                                f"{os.strerror(code)}")
        self._stream = (TlsStream(self._sock, self._ctx, server_side=False,
                                  server_hostname=None if self._pin else self.host)
                        if self.tls else Stream(self._sock))
        self._codec = zmtp.Codec("DEALER", as_server=False)
        self._out.clear()
        self._out.add(self._codec.data_to_send())
        self._last_rx = self.clock()
        self._state = _HANDSHAKE

    def _check_pin(self) -> None:
        stream = self._stream
        if self._pin is not None and isinstance(stream, TlsStream):
            der = stream.ssl.getpeercert(binary_form=True) or b""
            if not hmac.compare_digest(hashlib.sha256(der).digest(), self._pin):
                raise StreamClosed("the broker's TLS certificate does not match the pin "
                                   "(a different broker, or someone in between)")

    def _disconnect(self, why: str) -> None:
        if self._stream is not None:
            self._stream.close()
        elif self._sock is not None:
            self._sock.close()
        if self._state != _DOWN:
            self.last_error = why
        now = self.clock()
        if self._state == _UP and now - self._up_since >= STABLE_AFTER:
            self._backoff = RECONNECT_MIN
            self._next_attempt = now
        else:  # an attempt that failed, or a connection that ended as soon as it was up
            self._next_attempt = now + self._backoff
            self._backoff = min(self._backoff * 2, RECONNECT_MAX)
        self._sock = self._stream = self._codec = None
        self._state = _DOWN
        self._out.clear()
        self._frames = []
        self._body = None
        self._ping_at = None

    def _write(self) -> None:
        if self._stream is not None:
            self._out.write(self._stream)

    def _read(self) -> None:
        stream, codec = self._stream, self._codec
        assert stream is not None and codec is not None
        got = False
        while True:
            if self._body is not None:
                try:
                    n = stream.recv_into(self._body[self._body_pos:])
                except BlockingIOError:
                    break
                if n == 0:
                    raise StreamClosed("the broker closed the connection")
                got = True
                codec.body_received(n)
                self._body_pos += n
                if codec.body_remaining == 0:
                    self._frame(self._body.obj, self._body_more)
                    self._body = None
                continue
            datas, ended = codec.message_frames(READ_FRAMES)  # small frames at once
            if datas:
                self._frames += datas
                if ended:
                    self.inbox.append(self._frames)
                    self._frames = []
                continue
            ev = codec.next_event()
            if ev is None:
                try:
                    data = stream.recv(READ_CHUNK)
                except BlockingIOError:
                    break
                if not data:
                    raise StreamClosed("the broker closed the connection")
                got = True
                codec.receive(data)
                continue
            if type(ev) is zmtp.Frame:
                self._frame(ev.data, ev.more)
            elif type(ev) is zmtp.FrameStart:
                self._body = memoryview(allocate(ev.size, huge=False))
                self._body_more = ev.more
                self._body_pos = codec.read_body_into(self._body)
                if codec.body_remaining == 0:
                    self._frame(self._body.obj, ev.more)
                    self._body = None
            elif type(ev) is zmtp.Ready:
                self._state = _UP
                self._up_since = self.clock()
                self.last_error = ""
            elif type(ev) is zmtp.PeerError:
                raise StreamClosed(f"the broker refused the connection: {ev.reason}")
        if got:
            self._last_rx = self.clock()
            self._ping_at = None
        out = codec.data_to_send()  # PONGs, our READY
        if out:
            self._out.add(out)
            self._write()

    def _frame(self, data: Any, more: bool) -> None:
        self._frames.append(data)
        if not more:
            self.inbox.append(self._frames)
            self._frames = []

    def _heartbeat(self) -> None:
        now = self.clock()
        if self._ping_at is not None:
            if now - self._ping_at > HEARTBEAT_TIMEOUT:
                raise StreamClosed(f"no answer from the broker for {HEARTBEAT_TIMEOUT:g}s")
        elif now - self._last_rx > HEARTBEAT_IVL and not self._wants_write():
            self._out.add(zmtp.ping())
            self._ping_at = now
            self._write()

