"""A connected, non-blocking byte stream: plain TCP, or TLS around it.

Both the broker's gateway and the SDK's transport read and write through this, so the
ZMTP code above never knows whether bytes are encrypted. TLS runs through OpenSSL's
memory BIOs (:class:`ssl.SSLObject`): this module moves ciphertext between the socket
and OpenSSL in large chunks (one syscall per chunk, not one per 16 KiB record), and
decides itself when to read, so no plaintext ever hides inside OpenSSL where ``epoll``
cannot see it (:attr:`Stream.buffered` says when some waits).

Reads raise :class:`BlockingIOError` when nothing is available and return 0 at the end
of the stream; writes take as much as the socket (or, for TLS, a bounded backlog of
ciphertext) accepts and return how much.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from typing import Any

#: ``sendmsg`` takes at most this many buffers (Linux's IOV_MAX).
IOV_MAX = 1024
#: Ciphertext read from the socket at once.
CIPHER_CHUNK = 1 << 20
#: Plaintext encrypted at once; writes stop while this much ciphertext waits unsent.
CIPHER_BACKLOG = 1 << 20


class StreamClosed(Exception):
    """The stream failed (reset, TLS alert): it is unusable; the reason is the message."""


class Stream:
    """Plain TCP."""

    tls = False

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def handshake(self) -> bool:
        """Drive the transport's own handshake; True once done (always, for TCP)."""
        return True

    def recv(self, n: int) -> bytes:
        try:
            return self.sock.recv(n)
        except ConnectionError as exc:
            raise StreamClosed(str(exc)) from None

    def recv_into(self, view: memoryview) -> int:
        try:
            return self.sock.recv_into(view)
        except ConnectionError as exc:
            raise StreamClosed(str(exc)) from None

    def send(self, buffers: Sequence[Any]) -> int:
        """Send from ``buffers`` in order; returns the bytes taken (0: none fit now)."""
        try:
            return self.sock.sendmsg(buffers[:IOV_MAX])
        except BlockingIOError:
            return 0
        except (ConnectionError, BrokenPipeError) as exc:
            raise StreamClosed(str(exc)) from None

    @property
    def buffered(self) -> bool:
        """Bytes wait inside this object (not in the kernel): read again without waiting."""
        return False

    @property
    def wants_write(self) -> bool:
        """Bytes of our own (TLS) wait to be written: poll for writability."""
        return False

    def flush(self) -> bool:
        """Write what this object holds itself; True when nothing is left."""
        return True

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class TlsStream(Stream):
    """TLS over a non-blocking socket, through memory BIOs (see the module docstring)."""

    tls = True

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: str | None = None) -> None:
        super().__init__(sock)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._in, self._out, server_side=server_side,
                                    server_hostname=server_hostname)
        self._cipher = memoryview(b"")  # ciphertext taken from the BIO, not yet sent
        self._eof = False
        self._done = False

    # ----------------------------------------------------------------- plumbing

    def _pull(self) -> bool:
        """Move ciphertext from the socket into OpenSSL; False if none was available."""
        if self._eof:
            return False
        try:
            data = self.sock.recv(CIPHER_CHUNK)
        except BlockingIOError:
            return False
        except ConnectionError as exc:
            raise StreamClosed(str(exc)) from None
        if not data:
            self._eof = True
            self._in.write_eof()
            return True
        self._in.write(data)
        return True

    def flush(self) -> bool:
        while True:
            if not self._cipher:
                if not self._out.pending:
                    return True
                self._cipher = memoryview(self._out.read())
            try:
                n = self.sock.send(self._cipher)
            except BlockingIOError:
                return False
            except (ConnectionError, BrokenPipeError) as exc:
                raise StreamClosed(str(exc)) from None
            self._cipher = self._cipher[n:]  # a view: no copy of what is left
            if self._cipher:
                return False

    @property
    def wants_write(self) -> bool:
        return bool(self._cipher) or self._out.pending > 0

    @property
    def buffered(self) -> bool:
        return self.ssl.pending() > 0 or self._in.pending > 0

    def handshake(self) -> bool:
        if self._done:
            return True
        while True:
            try:
                self.ssl.do_handshake()
                self._done = True
                self.flush()
                return True
            except ssl.SSLWantReadError:
                self.flush()
                if not self._pull():
                    return False
                if self._eof:
                    raise StreamClosed("connection closed during the TLS handshake") from None
            except ssl.SSLError as exc:
                self.flush_quietly()
                why = getattr(exc, "verify_message", None) or exc.reason or str(exc)
                raise StreamClosed(f"TLS handshake failed: {why}") from None

    def flush_quietly(self) -> None:
        try:
            self.flush()
        except StreamClosed:
            pass

    # ----------------------------------------------------------------- data

    def _read(self, fn: Any) -> Any:
        while True:
            try:
                return fn()
            except ssl.SSLWantReadError:
                if not self._pull():
                    raise BlockingIOError from None
            except ssl.SSLZeroReturnError:
                return 0
            except ssl.SSLEOFError:
                return 0  # the peer closed without close_notify: an ordinary end here
            except ssl.SSLError as exc:
                raise StreamClosed(f"TLS error: {exc.reason or exc}") from None

    def recv(self, n: int) -> bytes:
        data = self._read(lambda: self.ssl.read(n))
        return b"" if data == 0 else data

    def recv_into(self, view: memoryview) -> int:
        return self._read(lambda: self.ssl.read(len(view), view))

    def send(self, buffers: Sequence[Any]) -> int:
        if not self.flush():
            return 0
        taken = 0
        for buf in buffers:
            view = memoryview(buf)
            if view.format != "B" or view.ndim != 1:
                view = view.cast("B")
            size = view.nbytes
            pos = 0
            while pos < size and self._out.pending < CIPHER_BACKLOG:
                try:
                    pos += self.ssl.write(view[pos:pos + CIPHER_BACKLOG])
                except ssl.SSLError as exc:
                    raise StreamClosed(f"TLS error: {exc.reason or exc}") from None
            taken += pos
            if pos < size:
                break
        self.flush()
        return taken
