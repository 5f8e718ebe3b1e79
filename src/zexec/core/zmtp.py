"""ZMTP 3.x (ZeroMQ's wire protocol, rfc.zeromq.org specs 23 and 37) as a sans-I/O codec.

Bytes in, events out (:meth:`Codec.receive` then :meth:`Codec.next_event`); frames in,
buffers out (:func:`encode_message`). No sockets here: the broker's gateway and the SDK's
transport own those, and the byte stream can be split anywhere (tests split it at every
boundary).

Only what zexec's peers speak: the NULL security mechanism (encryption, where wanted, is
TLS around the whole stream), versions 3.0 and 3.1, the ``READY``, ``ERROR``, ``PING`` and
``PONG`` commands. A peer's greeting is checked as soon as its bytes arrive, so a peer
that speaks ZMTP 1.0/2.0, another mechanism, or not ZMTP at all is refused with a
message that says so.

**Frame headers come before bodies.** A frame of at most ``inline_max`` bytes is returned
whole (:class:`Frame`) once it has arrived; a larger one is announced by its header alone
(:class:`FrameStart`), and its body is then the caller's to read: copy what is buffered
here with :meth:`Codec.read_body_into`, receive the rest straight from the wire into a
buffer of the announced size and report it with :meth:`Codec.body_received`. So the
caller decides (size limits, waiting for a token check) before it allocates or reads a
byte of a large body, and a large body is copied once, from the kernel into its buffer.

The peer's ``Identity`` property is reported, never acted on: whoever owns the socket
decides what a name means (the broker never routes by it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from zexec.core.zmtp_out import (  # noqa: F401  (part of this module's interface)
    _TTL,
    COMMAND,
    LONG,
    MORE,
    command,
    encode_message,
    error,
    frame_header,
    greeting,
    nbytes,
    ping,
    pong,
    ready,
)

_RESERVED = 0xF8
SIGNATURE_SIZE = 10
GREETING_SIZE = 64
_SIZE = struct.Struct(">Q")

#: Which peer socket types each of ours may talk to (libzmq's compatibility table).
COMPATIBLE = {
    "ROUTER": frozenset({"DEALER", "REQ", "ROUTER"}),
    "DEALER": frozenset({"ROUTER", "REP", "DEALER"}),
}


class ZmtpError(Exception):
    """The peer broke the protocol, or asked for something this codec does not speak.
    The message is fit for a log line and for the ``ERROR`` command sent before closing."""


@dataclass(frozen=True, slots=True)
class Ready:
    """The handshake is complete: the peer's ``READY`` (property names lower-cased)."""

    socket_type: str
    identity: bytes
    properties: dict[str, bytes]
    minor: int  # the peer's ZMTP minor version (0: 3.0, no heartbeats)


@dataclass(slots=True)  # not frozen: built per frame, and frozen init is 3x slower
class Frame:
    """A whole message frame of at most ``inline_max`` bytes."""

    data: bytes
    more: bool


@dataclass(slots=True)
class FrameStart:
    """The header of a larger frame: its ``size`` body bytes are the caller's to read."""

    size: int
    more: bool


@dataclass(frozen=True, slots=True)
class Ping:
    """A ZMTP 3.1 heartbeat (answered already: the ``PONG`` is in :meth:`Codec.data_to_send`).
    ``ttl``: seconds after which the peer wants the connection closed if nothing arrives
    (0: no wish)."""

    ttl: float
    context: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    context: bytes


@dataclass(frozen=True, slots=True)
class PeerError:
    """The peer sent ``ERROR`` and will close; nothing more comes."""

    reason: str


Event = Ready | Frame | FrameStart | Ping | Pong | PeerError

_GREETING, _HANDSHAKE, _TRAFFIC, _BODY, _CLOSED = range(5)


def _properties(data: bytes) -> dict[str, bytes]:
    props: dict[str, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        n = data[pos]
        pos += 1
        if pos + n + 4 > end:
            raise ZmtpError("malformed READY metadata")
        name = data[pos:pos + n].decode("ascii", errors="replace").lower()
        pos += n
        size = int.from_bytes(data[pos:pos + 4], "big")
        pos += 4
        if pos + size > end:
            raise ZmtpError("malformed READY metadata")
        props[name] = data[pos:pos + size]
        pos += size
    return props


class Codec:
    """One end of one ZMTP connection.

    ``socket_type``: ours (``"ROUTER"`` for the broker, ``"DEALER"`` for a client);
    peers of an incompatible type are refused. ``as_server``: the greeting's flag (the
    accepting end). ``identity``: the ``Identity`` we announce. ``inline_max``: frames
    up to this size are returned whole, larger ones by header (see the module docstring).
    ``max_command``: larger commands are a protocol error (they are buffered here).

    Our greeting is in :meth:`data_to_send` from the start; ``READY`` follows once the
    peer's greeting checks out, a ``PONG`` for every ``PING``. Any :class:`ZmtpError`
    raised leaves the codec closed: the caller sends :func:`error` and closes.
    """

    def __init__(self, socket_type: str, *, as_server: bool, identity: bytes = b"",
                 inline_max: int = 64 * 1024, max_command: int = 8192) -> None:
        if socket_type not in COMPATIBLE:
            raise ValueError(f"unsupported socket type {socket_type}")
        self.socket_type = socket_type
        self.identity = identity
        self.inline_max = inline_max
        self.max_command = max_command
        self._state = _GREETING
        self._buf = b""
        self._pos = 0
        self._out = bytearray(greeting(as_server))
        self._remaining = 0  # body bytes of a FrameStart not yet read by the caller
        self._minor = 0
        self.peer: Ready | None = None

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytes:
        """Protocol bytes to send (greeting, READY, PONGs), taken out of the codec."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def ready(self) -> bool:
        """The handshake is complete (messages may flow both ways)."""
        return self._state in (_TRAFFIC, _BODY)

    # ------------------------------------------------------------------ input

    def receive(self, data: Any) -> None:
        """Add bytes that arrived (any bytes-like object)."""
        if self._pos >= len(self._buf):
            self._buf = data if isinstance(data, bytes) else bytes(data)
        else:
            self._buf = self._buf[self._pos:] + bytes(data)
        self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not consumed yet (the caller counts them as held)."""
        return len(self._buf) - self._pos

    @property
    def body_remaining(self) -> int:
        """Bytes of the announced large frame still to be read by the caller (0: none)."""
        return self._remaining

    def read_body_into(self, view: memoryview) -> int:
        """Copy buffered bytes of the current large frame's body into ``view``; returns
        how many (the body's remaining count goes down by as many)."""
        n = min(len(view), self._remaining, len(self._buf) - self._pos)
        if n:
            view[:n] = memoryview(self._buf)[self._pos:self._pos + n]
            self._pos += n
            self.body_received(n)
        return n

    def body_received(self, n: int) -> None:
        """The caller read ``n`` bytes of the current large frame's body from the wire."""
        if n > self._remaining:
            raise ValueError("more body bytes than the frame announced")
        self._remaining -= n
        if self._remaining == 0 and self._state == _BODY:
            self._state = _TRAFFIC

    def message_frames(self, limit: int) -> tuple[list[bytes], bool]:
        """Up to ``limit`` whole small frames of the current message at once, without an
        event object per frame: ``(datas, ended)``, ``ended`` when the last of them ends
        the message (frames after it are left). Stops before anything that is not a
        whole frame of at most ``inline_max`` bytes (a command, a large frame's header,
        bytes still to come): :meth:`next_event` reports that."""
        datas: list[bytes] = []
        if self._state != _TRAFFIC:
            return datas, False
        buf, p, end = self._buf, self._pos, len(self._buf)
        inline_max = self.inline_max
        try:
            while len(datas) < limit and end - p >= 2:
                flags = buf[p]
                if flags & (COMMAND | _RESERVED):
                    break  # next_event answers a command, or refuses the flags
                if flags & LONG:
                    if end - p < 9:
                        break
                    size = _SIZE.unpack_from(buf, p + 1)[0]
                    start = p + 9
                else:
                    size = buf[p + 1]
                    start = p + 2
                if size > inline_max or start + size > end:
                    break
                p = start + size
                datas.append(buf[start:p])
                if not flags & MORE:
                    return datas, True
            return datas, False
        finally:
            self._pos = p

    def next_event(self) -> Event | None:
        """The next event, or None until more bytes arrive. Raises :class:`ZmtpError` if
        the peer broke the protocol."""
        state = self._state
        if state == _TRAFFIC:
            return self._traffic()
        if state == _BODY:
            raise RuntimeError("read the large frame's body (read_body_into) first")
        if state == _GREETING:
            return self._greeting()
        if state == _HANDSHAKE:
            return self._handshake()
        return None

    def _fail(self, why: str) -> ZmtpError:
        self._state = _CLOSED
        return ZmtpError(why)

    def _greeting(self) -> Event | None:
        buf, have = self._buf, len(self._buf) - self._pos
        p = self._pos
        if have >= 1 and buf[p] != 0xFF:
            raise self._fail("not a ZeroMQ (ZMTP) peer")
        if have >= SIGNATURE_SIZE and not buf[p + 9] & 1:
            raise self._fail("peer speaks ZMTP 1.0 (libzmq 2.x); ZMTP 3 is required")
        if have >= SIGNATURE_SIZE + 1 and buf[p + 10] < 3:
            raise self._fail(f"peer speaks ZMTP {buf[p + 10]}.0 (libzmq < 4); ZMTP 3 is "
                             "required")
        if have < GREETING_SIZE:
            return None
        minor = buf[p + 11] if buf[p + 10] == 3 else 1
        mechanism = buf[p + 12:p + 32].rstrip(b"\x00").decode("ascii", errors="replace")
        self._pos += GREETING_SIZE
        if mechanism != "NULL":
            raise self._fail(f"security mechanism {mechanism!r} is not spoken here (only "
                             "NULL; encryption is TLS on the encrypted port)")
        self._minor = minor
        self._state = _HANDSHAKE
        self._out += ready(self.socket_type, self.identity)
        return self._handshake()

    def _command(self) -> tuple[bytes, bytes] | None:
        """The next frame, which must be a whole command: (name, data)."""
        buf, p = self._buf, self._pos
        have = len(buf) - p
        if have < 2:
            return None
        flags = buf[p]
        if flags & COMMAND == 0:
            raise self._fail("a message frame arrived before the READY handshake")
        if flags & LONG:
            if have < 9:
                return None
            size = _SIZE.unpack_from(buf, p + 1)[0]
            start = p + 9
        else:
            size = buf[p + 1]
            start = p + 2
        return self._command_body(flags, size, start)

    def _command_body(self, flags: int, size: int, start: int) -> tuple[bytes, bytes] | None:
        if flags & (_RESERVED | MORE):
            raise self._fail(f"invalid command flags {flags:#x}")
        if size > self.max_command:
            raise self._fail(f"command of {size} bytes (at most {self.max_command})")
        end = start + size
        if len(self._buf) < end:
            return None
        body = self._buf[start:end]
        self._pos = end
        if not body or body[0] + 1 > len(body):
            raise self._fail("malformed command")
        n = body[0]
        return body[1:1 + n], body[1 + n:]

    def _handshake(self) -> Event | None:
        cmd = self._command()
        if cmd is None:
            return None
        name, data = cmd
        if name == b"ERROR":
            self._state = _CLOSED
            return PeerError(_error_reason(data))
        if name != b"READY":
            raise self._fail(f"expected READY, got command {name[:16]!r}")
        props = _properties(data)
        kind = props.get("socket-type", b"").decode("ascii", errors="replace")
        if kind not in COMPATIBLE[self.socket_type]:
            raise self._fail(f"a {kind or 'untyped'} socket cannot talk to our "
                             f"{self.socket_type}")
        identity = props.get("identity", b"")
        if len(identity) > 255:
            raise self._fail("identity longer than 255 bytes")
        self._state = _TRAFFIC
        self.peer = Ready(kind, identity, props, self._minor)
        return self.peer

    def _traffic(self) -> Event | None:
        while True:
            # The frame header is parsed inline, as in _command: this loop runs for every
            # frame the broker receives, and a helper call per frame is measurable there.
            buf, p = self._buf, self._pos
            have = len(buf) - p
            if have < 2:
                return None
            flags = buf[p]
            if flags & LONG:
                if have < 9:
                    return None
                size = _SIZE.unpack_from(buf, p + 1)[0]
                start = p + 9
            else:
                size = buf[p + 1]
                start = p + 2
            if flags & COMMAND:
                cmd = self._command_body(flags, size, start)
                if cmd is None:
                    return None
                event = self._on_command(*cmd)
                if event is None:
                    continue  # a command we ignore
                return event
            if flags & _RESERVED:
                raise self._fail(f"invalid frame flags {flags:#x}")
            if size >> 63:
                raise self._fail("frame size out of range")
            more = bool(flags & MORE)
            if size <= self.inline_max:
                end = start + size
                if len(buf) < end:
                    return None
                self._pos = end
                return Frame(buf[start:end], more)
            self._pos = start
            self._remaining = size
            self._state = _BODY
            return FrameStart(size, more)

    def _on_command(self, name: bytes, data: bytes) -> Event | None:
        if name == b"PING":
            if len(data) < 2:
                raise self._fail("malformed PING")
            context = data[2:18]
            self._out += pong(context)
            return Ping(_TTL.unpack_from(data)[0] / 10, context)
        if name == b"PONG":
            return Pong(data[:16])
        if name == b"ERROR":
            self._state = _CLOSED
            return PeerError(_error_reason(data))
        if name == b"READY":
            raise self._fail("a second READY")
        return None  # SUBSCRIBE, CANCEL, ...: nothing a ROUTER/DEALER pair needs


def _error_reason(data: bytes) -> str:
    n = data[0] if data else 0
    return data[1:1 + n].decode("utf-8", errors="replace")
