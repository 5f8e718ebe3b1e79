"""ZMTP 3.x output: the greeting, commands and message frames as bytes (the sending side
of :mod:`zexec.core.zmtp`, which re-exports all of it)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

MORE = 0x01
LONG = 0x02
COMMAND = 0x04
#: Frames up to this size are sent with their header in one piece (one iovec).
_JOIN_MAX = 2048
_LONG_HEADER = struct.Struct(">BQ")
_TTL = struct.Struct(">H")


def greeting(as_server: bool) -> bytes:
    """Our 64-byte greeting: ZMTP 3.1, NULL mechanism."""
    return (b"\xff" + bytes(8) + b"\x7f" + b"\x03\x01" + b"NULL".ljust(20, b"\x00")
            + (b"\x01" if as_server else b"\x00") + bytes(31))


def command(name: bytes, data: bytes = b"") -> bytes:
    """One command frame (``name`` at most 255 bytes)."""
    body = bytes([len(name)]) + name + data
    if len(body) <= 255:
        return bytes([COMMAND, len(body)]) + body
    return _LONG_HEADER.pack(COMMAND | LONG, len(body)) + body


def ready(socket_type: str, identity: bytes = b"", **extra: bytes) -> bytes:
    """A ``READY`` command with ``Socket-Type``, ``Identity`` and ``extra`` properties."""
    props = {"Socket-Type": socket_type.encode(), "Identity": identity, **extra}
    return command(b"READY", b"".join(
        bytes([len(k)]) + k.encode() + len(v).to_bytes(4, "big") + v for k, v in props.items()
    ))


def error(reason: str) -> bytes:
    """An ``ERROR`` command (the reason cut to 255 bytes)."""
    raw = reason.encode(errors="replace")[:255]
    return command(b"ERROR", bytes([len(raw)]) + raw)


def ping(ttl: float = 0.0, context: bytes = b"") -> bytes:
    """A ``PING`` (``ttl`` in seconds, sent in tenths; ``context`` at most 16 bytes)."""
    return command(b"PING", _TTL.pack(min(int(ttl * 10), 0xFFFF)) + context[:16])


def pong(context: bytes = b"") -> bytes:
    return command(b"PONG", context[:16])


def frame_header(size: int, more: bool) -> bytes:
    flags = MORE if more else 0
    if size <= 255:
        return bytes([flags, size])
    return _LONG_HEADER.pack(flags | LONG, size)


def nbytes(frame: Any) -> int:
    """Bytes in a frame (``bytes``, ``bytearray``, ``memoryview``, ``mmap``, any buffer)."""
    if isinstance(frame, bytes | bytearray):
        return len(frame)
    return memoryview(frame).nbytes


#: Short frame headers, made once: a message's small frames are the broker's common case.
_SHORT_MORE = tuple(bytes((MORE, n)) for n in range(256))
_SHORT_LAST = tuple(bytes((0, n)) for n in range(256))


def encode_message(frames: Sequence[Any]) -> list[Any]:
    """The buffers that carry one multipart message, ready for ``sendmsg``: headers and
    small frames joined into ``bytes``, every larger frame as itself (never copied).
    An empty message is one empty frame (ZeroMQ has no empty messages)."""
    if not frames:
        return [b"\x00\x00"]
    out: list[Any] = []
    small: list[bytes] = []
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        size = len(frame) if type(frame) is bytes else nbytes(frame)
        if size <= 255:
            small.append(_SHORT_MORE[size] if i < last else _SHORT_LAST[size])
        else:
            small.append(frame_header(size, i < last))
        if size <= _JOIN_MAX:
            small.append(frame if type(frame) is bytes else bytes(frame))
            continue
        out.append(b"".join(small))
        small = []
        view = memoryview(frame)
        out.append(view if view.format == "B" and view.ndim == 1 else view.cast("B"))
    if small:
        out.append(b"".join(small))
    return out
