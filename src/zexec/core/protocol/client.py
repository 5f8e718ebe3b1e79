"""The client <-> broker frames (the **frontend**): v1 requests and events, and what a
legacy client sends.

* v1:     ``[b"", MAGIC, verb, token, call_id, *rest]``
* legacy: ``[b"", token, fn, args]`` and ``[b"", token, LEGACY_CANCEL, reason]``
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zexec.core.errors import ProtocolError
from zexec.core.model import EV_ERROR, Event
from zexec.core.protocol.common import (
    CALL,
    CALL_ID_SIZE,
    CANCEL,
    EVT,
    LEGACY_CANCEL,
    MAGIC,
    MAX_TOKEN_SIZE,
    PING,
    PONG,
    REGISTER,
    WORKER_READY,
    WORKER_REPLY,
    dump_header,
    frame_bytes,
    load_header,
)


@dataclass(frozen=True)
class V1Call:
    token: str
    call_id: bytes
    rest: list[Any]  # [header, fn, args, *buffers], forwarded untouched


@dataclass(frozen=True)
class V1Cancel:
    token: str
    call_id: bytes
    reason: bytes


@dataclass(frozen=True)
class V1Ping:
    token: str
    call_ids: tuple[bytes, ...]


@dataclass(frozen=True)
class LegacyCall:
    token: str
    fn: Any
    args: Any


@dataclass(frozen=True)
class LegacyCancel:
    token: str
    reason: bytes


FrontendMessage = V1Call | V1Cancel | V1Ping | LegacyCall | LegacyCancel


def frontend_token_position(head: Sequence[Any]) -> int | None:
    """Index of the token in a client message whose first frames (from the empty
    delimiter on) are ``head``: 3 for v1 (after MAGIC and the verb), 1 for legacy; None
    while ``head`` is too short to tell. Lets a transport check the token before it
    reads the rest of the message."""
    if len(head) < 2:
        return None
    return 3 if frame_bytes(head[1]) == MAGIC else 1


def v1_call_id(body: Sequence[Any]) -> bytes | None:
    """The call id of a v1 client message (after the delimiter; ``b""`` if it is too
    short to have one), or None if ``body`` is not v1 (legacy, or empty)."""
    if not body or frame_bytes(body[0]) != MAGIC:
        return None
    return frame_bytes(body[3]) if len(body) > 3 else b""


def backend_head_problem(head: Sequence[Any]) -> str | None:
    """Why a backend message from a peer that has shown no credential yet is refused,
    judged on its first frames (``head``, from the delimiter on); None while it may go on
    (only the messages that carry a server credential may)."""
    if frame_bytes(head[0]) != b"" or len(head) > 1 and frame_bytes(head[1]) != MAGIC:
        return "not a zexec backend message"
    if len(head) > 2 and frame_bytes(head[2]) not in (REGISTER, WORKER_READY, WORKER_REPLY):
        return "only a registered server or worker may send this"
    return None


def backend_credential(head: Sequence[Any]) -> tuple[str, bytes] | None:
    """``(user_id, credential)`` of a server or worker message that carries one (``REG``,
    ``WRDY``, ``WRPL``: frames 3 and 4 from the delimiter on), given its first frames;
    None if it carries none or ``head`` is too short."""
    if len(head) < 5 or frame_bytes(head[1]) != MAGIC or \
            frame_bytes(head[2]) not in (REGISTER, WORKER_READY, WORKER_REPLY):
        return None
    try:
        return frame_bytes(head[3]).decode(), frame_bytes(head[4])
    except UnicodeDecodeError:
        return None


def token_of(frame: Any) -> str:
    """The token in a token frame; :class:`ProtocolError` if it cannot be one."""
    return _token(frame)


def _token(frame: Any) -> str:
    raw = frame_bytes(frame)
    if not raw:
        raise ProtocolError("empty token frame")
    if len(raw) > MAX_TOKEN_SIZE:
        raise ProtocolError("token frame too large")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ProtocolError("token is not UTF-8") from None


def parse_frontend(body: Sequence[Any]) -> FrontendMessage:
    """Decode what a client sent, without the routing id and the empty delimiter.

    Raises :class:`ProtocolError` for anything that is neither protocol; never
    deserializes a payload.
    """
    if not body:
        raise ProtocolError("empty message")
    first = frame_bytes(body[0])
    if first[:1] == b"\x00" and first != MAGIC:
        # Reserved for zexec protocol markers (a real token never starts with NUL).
        raise ProtocolError(f"unsupported protocol marker {first[:8]!r}; this broker speaks v1")
    if first == MAGIC:
        if len(body) < 4:
            raise ProtocolError("v1 message needs at least [MAGIC, verb, token, call_id]")
        verb = frame_bytes(body[1])
        token = _token(body[2])
        call_id = frame_bytes(body[3])
        if verb == CALL:
            if len(call_id) != CALL_ID_SIZE:
                raise ProtocolError(f"call id must be {CALL_ID_SIZE} bytes")
            if len(body) < 7:
                raise ProtocolError("CALL needs [header, fn, args] after the call id")
            return V1Call(token, call_id, list(body[4:]))
        if verb == CANCEL:
            if len(call_id) != CALL_ID_SIZE:
                raise ProtocolError(f"call id must be {CALL_ID_SIZE} bytes")
            reason = frame_bytes(body[4]) if len(body) > 4 else b""
            return V1Cancel(token, call_id, reason[:1024])
        if verb == PING:
            ids = frame_bytes(body[4]) if len(body) > 4 else b""
            if len(ids) % CALL_ID_SIZE:
                raise ProtocolError("PING call-id list is not a whole number of ids")
            return V1Ping(
                token,
                tuple(ids[i : i + CALL_ID_SIZE] for i in range(0, len(ids), CALL_ID_SIZE)),
            )
        raise ProtocolError(f"unknown v1 verb {verb[:16]!r}")
    if len(body) != 3:
        raise ProtocolError(
            f"legacy message needs exactly [token, fn, args]; got {len(body)} frames"
        )
    token = _token(body[0])
    if frame_bytes(body[1]) == LEGACY_CANCEL:
        return LegacyCancel(token, frame_bytes(body[2])[:1024])
    return LegacyCall(token, body[1], body[2])


def v1_request(verb: bytes, token: str, call_id: bytes, rest: Sequence[Any] = ()) -> list[Any]:
    """Frames a v1 client sends to the broker (DEALER adds nothing; leading b"" kept)."""
    return [b"", MAGIC, verb, token.encode(), call_id, *rest]


def v1_ping(token: str, call_ids: Sequence[bytes]) -> list[Any]:
    return v1_request(PING, token, b"", [b"".join(call_ids)])


def v1_event(
    call_id: bytes, kind: str, seq: int, fields: dict[str, Any] | None = None,
    buffers: Sequence[Any] = (),
) -> list[Any]:
    """Client-bound frames of one v1 event (what follows the empty delimiter)."""
    header = {"e": kind, "seq": seq}
    if fields:
        header.update(fields)
    return [MAGIC, EVT, call_id, dump_header(header), *buffers]


def v1_error(
    call_id: bytes, code: str, message: str, seq: int = 0, type_name: str = "",
    traceback: str = "", buffers: Sequence[Any] = (),
) -> list[Any]:
    return v1_event(
        call_id, EV_ERROR, seq,
        {"code": code, "message": message, "type": type_name, "traceback": traceback},
        buffers,
    )


def v1_pong(header: dict[str, Any]) -> list[Any]:
    return [MAGIC, PONG, b"", dump_header(header)]


def parse_client_bound(body: Sequence[Any]) -> Event | dict[str, Any]:
    """Decode what a v1 client receives (after the empty delimiter): an :class:`Event`,
    or for PONG the decoded header dict."""
    if len(body) < 4 or frame_bytes(body[0]) != MAGIC:
        raise ProtocolError("not a v1 message")
    kind = frame_bytes(body[1])
    header = load_header(body[3])
    if kind == PONG:
        return header
    if kind != EVT:
        raise ProtocolError(f"unknown v1 kind {kind[:16]!r}")
    seq = header.get("seq", 0)
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise ProtocolError("event seq must be an integer")
    return Event(
        call_id=frame_bytes(body[2]), kind=str(header.get("e", "")), seq=seq,
        header=header, buffers=tuple(body[4:]),
    )
