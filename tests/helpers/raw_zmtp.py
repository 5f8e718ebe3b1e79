"""A hand-driven ZMTP peer for attacks: any identity, any frame sizes, any bytes, on a
plain or TLS connection, from any loopback source address (127.0.0.0/8 are all ours, so
a test can be several "addresses"). Blocking, one thread; built on zexec's codec."""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

from zexec.core import zmtp

TLS_ANY = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
TLS_ANY.check_hostname = False
TLS_ANY.verify_mode = ssl.CERT_NONE


class Closed(Exception):
    pass


class RawPeer:
    def __init__(self, port: int, *, identity: bytes = b"", tls: bool = False,
                 source: str = "127.0.0.1", timeout: float = 10.0, handshake: bool = True,
                 socket_type: str = "DEALER") -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                        source_address=(source, 0))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: Any = TLS_ANY.wrap_socket(sock) if tls else sock
        self.codec = zmtp.Codec("DEALER", as_server=False, identity=identity)
        self.socket_type = socket_type
        self.messages: list[list[bytes]] = []
        self._frames: list[bytes] = []
        self._body: bytearray | None = None
        self._got = 0
        self.ready: zmtp.Ready | None = None
        if handshake:
            self.sock.sendall(self._greeting_and_ready(identity))
            while self.ready is None:
                self._read(timeout)

    def _greeting_and_ready(self, identity: bytes) -> bytes:
        self.codec.data_to_send()  # our greeting, sent below with our own READY
        return zmtp.greeting(False) + zmtp.ready(self.socket_type, identity)

    def send(self, frames: list[Any]) -> None:
        for part in zmtp.encode_message(frames):
            self.sock.sendall(part)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = 10.0) -> list[bytes] | None:
        """The next message, or None if none within ``timeout``; :class:`Closed` if the
        broker closed the connection."""
        deadline = time.monotonic() + timeout
        while not self.messages:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._read(left)
        return self.messages.pop(0)

    def wait_closed(self, timeout: float = 10.0) -> bool:
        """True once the broker has closed the connection (messages before are kept)."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._read(deadline - time.monotonic())
        except Closed:
            return True
        return False

    def _read(self, timeout: float) -> None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            raise Closed(str(exc)) from None
        if not data:
            raise Closed("closed by the broker")
        self.codec.receive(data)
        while True:
            if self._body is not None:
                n = self.codec.read_body_into(memoryview(self._body)[self._got:])
                self._got += n
                if self._got < len(self._body):
                    return
                self._frame(bytes(self._body), self._more)
                self._body = None
                continue
            try:
                ev = self.codec.next_event()
            except zmtp.ZmtpError as exc:
                raise Closed(str(exc)) from None
            if ev is None:
                return
            if isinstance(ev, zmtp.Ready):
                self.ready = ev
            elif isinstance(ev, zmtp.Frame):
                self._frame(ev.data, ev.more)
            elif isinstance(ev, zmtp.FrameStart):
                self._body, self._got, self._more = bytearray(ev.size), 0, ev.more
            elif isinstance(ev, zmtp.PeerError):
                raise Closed(f"ERROR: {ev.reason}")
        pass

    def _frame(self, data: bytes, more: bool) -> None:
        self._frames.append(data)
        if not more:
            self.messages.append(self._frames)
            self._frames = []

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def stream_frame(peer: RawPeer, size: int, more: bool = False, chunk: int = 1 << 20,
                 deadline: float | None = None) -> int:
    """Announce one frame of ``size`` bytes and send its body (zeros) until done, the
    broker closes, or ``deadline``; returns the bytes sent."""
    peer.send_raw(zmtp.frame_header(size, more))
    block = bytes(min(chunk, size))
    sent = 0
    try:
        while sent < size and (deadline is None or time.monotonic() < deadline):
            n = min(len(block), size - sent)
            peer.sock.sendall(memoryview(block)[:n])
            sent += n
    except (OSError, ssl.SSLError):
        pass
    return sent
