"""Frame layouts of zexec's two wire protocols, as pure encode/decode functions.

No sockets here: every function takes and returns lists of frames (``bytes`` or any
buffer), so the framing is tested without I/O. ``docs/protocol.md`` is the written spec;
this module is its executable form and the two must agree.

Frames on the **frontend** (client DEALER -> broker ROUTER), after the ROUTER's routing id:

* v1:     ``[b"", MAGIC, verb, token, call_id, *rest]``
* legacy: ``[b"", token, fn, args]`` and ``[b"", token, LEGACY_CANCEL, reason]``

Frames on the **backend** (broker ROUTER <-> server DEALER), after the routing id:

* broker -> server: ``[b"", MAGIC, verb, client_id, call_key, user_id, *rest]``
* server -> broker: ``[b"", MAGIC, verb, *rest]``

A server that registers with ``"direct": true`` has its workers take calls on their own
backend connections (``WRDY``, then the broker -> server layout above, sent to the
worker); the server then only hears ``KILL`` for them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zexec.core.errors import ProtocolError
from zexec.core.model import (  # noqa: F401  (event kinds are part of the protocol)
    EV_CANCELLED,
    EV_ERROR,
    EV_OUTPUT,
    EV_RETURN,
    EV_YIELD,
    FINAL_EVENTS,
    Event,
)

#: First body frame of every v1 message; a legacy token never starts with NUL.
MAGIC = b"\x00ZX1"
PROTOCOL_VERSION = 1

# Client -> broker verbs (v1).
CALL = b"CALL"
CANCEL = b"CNCL"
PING = b"PING"
# Broker/server -> client kinds (v1).
EVT = b"EVT"
PONG = b"PONG"
# Broker -> server verbs.
LEGACY_CALL = b"LCALL"
LEGACY_CANCEL_VERB = b"LCNCL"
REGISTER_ACK = b"RACK"
KILL = b"KILL"  # broker -> server: kill this worker of yours (its call was cancelled/expired)
# Server -> broker verbs.
REGISTER = b"REG"
REPLY = b"RPL"
WORKER_REPLY = b"WRPL"
WORKER_READY = b"WRDY"  # worker -> broker: this connection is an idle worker of the user
WORKER_GONE = b"WGONE"  # server -> broker: this worker of mine exited
BYE = b"BYE"
FINAL = b"F"
MORE = b"M"
DONE = b"D"  # worker -> server: the call ended; its events went straight to the broker

# Legacy (scidx-rexec 0.1.0) constants.
LEGACY_CANCEL = b"__REXEC_CANCEL__"
LEGACY_HEARTBEAT = b"__REXEC_HEARTBEAT__"

CALL_ID_SIZE = 16
MAX_TOKEN_SIZE = 16 * 1024


# --------------------------------------------------------------------------- helpers


def frame_bytes(frame: Any) -> bytes:
    """The bytes of a frame (``bytes``, ``zmq.Frame``, ``memoryview`` ...)."""
    if isinstance(frame, bytes):
        return frame
    b = getattr(frame, "bytes", None)
    if b is not None:
        return b
    return bytes(frame)


def dump_header(header: dict[str, Any]) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode()


def load_header(frame: Any) -> dict[str, Any]:
    try:
        value = json.loads(frame_bytes(frame))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"header frame is not JSON: {exc}") from None
    except RecursionError:  # absurdly nested JSON: refuse it, do not die on it
        raise ProtocolError("header frame is nested too deeply") from None
    if not isinstance(value, dict):
        raise ProtocolError("header frame must be a JSON object")
    return value


def call_timeout(header: dict[str, Any]) -> float | None:
    """The ``timeout`` of a v1 call header in seconds, or None (none, or not a positive
    number)."""
    timeout = header.get("timeout")
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        return float(timeout)
    return None


def python_mismatch(header: dict[str, Any], python: str) -> str | None:
    """Why a v1 call with ``header`` cannot run on Python ``python`` (X.Y), or None."""
    client = header.get("py")
    if client == python:
        return None
    return (f"client Python {client} cannot call a server running Python {python}: pickled "
            f"functions do not cross minor versions; use an environment pinned to "
            f"python=={client}")


def server_credential(secret: bytes, user_id: str) -> str:
    """The credential a server presents to serve ``user_id``: HMAC-SHA256 under the
    broker secret. The deployer computes it and hands it to that user's server only."""
    return hmac.new(secret, b"zexec-server:" + user_id.encode(), hashlib.sha256).hexdigest()


def check_credential(secret: bytes, user_id: str, credential: bytes) -> bool:
    expected = server_credential(secret, user_id).encode()
    return hmac.compare_digest(expected, credential)


# --------------------------------------------------------------------------- frontend


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


# --------------------------------------------------------------------------- events


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


# --------------------------------------------------------------------------- legacy replies


def legacy_payload(obj: Any) -> bytes:
    """A legacy reply payload. scidx-rexec reads it with ``dill.loads``; plain pickle of
    builtin objects (str, dict) is readable by dill, so the broker needs no dill."""
    return pickle.dumps(obj, protocol=4)


def legacy_event(kind: str, seq: int, **fields: Any) -> dict[str, Any]:
    """A legacy stream event dict (``START``, ``DATA``, ``END``, ``ERROR``)."""
    return {"type": kind, "sequence": seq, **fields}


# --------------------------------------------------------------------------- final events
# What a broker or server that is not running the call sends to end it, in the call's
# own protocol: both end calls (cancel, deadline, worker or server gone).


def final_error(call_key: bytes, legacy: bool, code: str, message: str, seq: int = 0,
                type_name: str = "") -> list[Any]:
    """Client-bound frames of an error that ends a call (legacy: an ``ERROR`` event)."""
    if legacy:
        return [legacy_payload(legacy_event("ERROR", seq, message=message, details=""))]
    return v1_error(call_key, code, message, seq, type_name)


def final_cancelled(call_key: bytes, legacy: bool, reason: str, seq: int = 0) -> list[Any]:
    """Client-bound frames of the event that ends a cancelled call."""
    if legacy:
        return [legacy_payload(legacy_event("END", seq, cancelled=True, reason=reason))]
    return v1_event(call_key, EV_CANCELLED, seq, {"reason": reason})


# --------------------------------------------------------------------------- backend


def to_server(
    verb: bytes, client_id: bytes, call_key: bytes, user_id: str, rest: Sequence[Any]
) -> list[Any]:
    """Frames the broker sends to a server (after the server's routing id)."""
    return [b"", MAGIC, verb, client_id, call_key, user_id.encode(), *rest]


@dataclass(frozen=True)
class ServerBound:
    verb: bytes
    client_id: bytes
    call_key: bytes
    user_id: str
    rest: list[Any]


def parse_server_bound(body: Sequence[Any]) -> ServerBound:
    """Decode a broker -> server message (after the empty delimiter)."""
    if len(body) < 5 or frame_bytes(body[0]) != MAGIC:
        raise ProtocolError("not a broker message")
    return ServerBound(
        frame_bytes(body[1]), frame_bytes(body[2]), frame_bytes(body[3]), frame_bytes(body[4]).decode(errors="replace"),
        list(body[5:]),
    )


def kill(worker_id: bytes) -> list[Any]:
    """Broker -> server (after the server's routing id): kill the worker whose backend
    routing id is ``worker_id``."""
    return [b"", MAGIC, KILL, worker_id]


def parse_kill(body: Sequence[Any]) -> bytes | None:
    """The worker id of a broker -> server ``KILL`` (after the delimiter), else None."""
    if len(body) == 3 and frame_bytes(body[0]) == MAGIC and frame_bytes(body[1]) == KILL:
        return frame_bytes(body[2])
    return None


def register(user_id: str, credential: str, info: dict[str, Any]) -> list[Any]:
    """Server -> broker registration; sent again as the heartbeat."""
    return [b"", MAGIC, REGISTER, user_id.encode(), credential.encode(), dump_header(info)]


def reply(client_id: bytes, call_key: bytes, final: bool, body: Sequence[Any]) -> list[Any]:
    """Server -> broker: forward ``body`` to the client, ending the call if ``final``."""
    return [b"", MAGIC, REPLY, client_id, call_key, FINAL if final else MORE, *body]


def worker_reply(user_id: str, credential: str, client_id: bytes, call_key: bytes,
                 final: bool, body: Sequence[Any]) -> list[Any]:
    """Worker -> broker: like :func:`reply`, sent by one of a server's workers on its own
    connection; the credential (the server's) is checked on every message, so the broker
    keeps no state about worker connections."""
    return [b"", MAGIC, WORKER_REPLY, user_id.encode(), credential.encode(), client_id,
            call_key, FINAL if final else MORE, *body]


def worker_ready(user_id: str, credential: str, reconnected: bool = False) -> list[Any]:
    """Worker -> broker: this connection is an idle worker of ``user_id``'s server (the
    credential is the server's); sent when it starts, then every 50 ms until its first
    call (an announcement before the server's registration is ignored) or for 3 s, then
    every second while idle, so a restarted broker learns it again. ``reconnected``
    (a sixth frame ``b"R"``): its connection broke since the last call it was given, so
    a call the broker believes it runs was lost on the way (or its last events were)."""
    frames = [b"", MAGIC, WORKER_READY, user_id.encode(), credential.encode()]
    return [*frames, b"R"] if reconnected else frames


def worker_gone(worker_id: bytes, exit_code: int | None, reason: str = "") -> list[Any]:
    """Server -> broker: the worker whose backend routing id is ``worker_id`` exited
    (``reason``: why the server killed it, for the call's error message)."""
    info = {"exit_code": exit_code, **({"reason": reason} if reason else {})}
    return [b"", MAGIC, WORKER_GONE, worker_id, dump_header(info)]


@dataclass(frozen=True)
class Register:
    user_id: str
    credential: bytes
    info: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    client_id: bytes
    call_key: bytes
    final: bool
    body: list[Any]


@dataclass(frozen=True)
class WorkerReply:
    user_id: str
    credential: bytes
    client_id: bytes
    call_key: bytes
    final: bool
    body: list[Any]


@dataclass(frozen=True)
class WorkerReady:
    user_id: str
    credential: bytes
    reconnected: bool = False


@dataclass(frozen=True)
class WorkerGone:
    worker_id: bytes
    exit_code: int | None
    reason: str = ""


@dataclass(frozen=True)
class Bye:
    pass


BackendMessage = Register | Reply | WorkerReply | WorkerReady | WorkerGone | Bye


def _flag(frame: Any) -> bool:
    flag = frame_bytes(frame)
    if flag not in (FINAL, MORE):
        raise ProtocolError("the reply flag must be F or M")
    return flag == FINAL


def _user_id(frame: Any) -> str:
    try:
        return frame_bytes(frame).decode()
    except UnicodeDecodeError:
        raise ProtocolError("user id is not UTF-8") from None


def parse_backend(body: Sequence[Any]) -> BackendMessage:
    """Decode what a server sent (without routing id and delimiter)."""
    if len(body) < 2 or frame_bytes(body[0]) != MAGIC:
        raise ProtocolError("backend messages start with MAGIC")
    verb = frame_bytes(body[1])
    if verb == REGISTER:
        if len(body) != 5:
            raise ProtocolError("REG needs [user_id, credential, info]")
        return Register(_user_id(body[2]), frame_bytes(body[3]), load_header(body[4]))
    if verb == REPLY:
        if len(body) < 6:
            raise ProtocolError("RPL needs [client_id, call_key, flag, *body]")
        return Reply(frame_bytes(body[2]), frame_bytes(body[3]), _flag(body[4]), list(body[5:]))
    if verb == WORKER_REPLY:
        if len(body) < 8:
            raise ProtocolError("WRPL needs [user_id, credential, client_id, call_key, flag, "
                                "*body]")
        return WorkerReply(_user_id(body[2]), frame_bytes(body[3]), frame_bytes(body[4]),
                           frame_bytes(body[5]), _flag(body[6]), list(body[7:]))
    if verb == WORKER_READY:
        if len(body) not in (4, 5) or len(body) == 5 and frame_bytes(body[4]) != b"R":
            raise ProtocolError("WRDY needs [user_id, credential] and optionally R")
        return WorkerReady(_user_id(body[2]), frame_bytes(body[3]), len(body) == 5)
    if verb == WORKER_GONE:
        if len(body) != 4:
            raise ProtocolError("WGONE needs [worker_id, info]")
        code, reason = (load_header(body[3]).get(k) for k in ("exit_code", "reason"))
        return WorkerGone(frame_bytes(body[2]),
                          code if isinstance(code, int) and not isinstance(code, bool) else None,
                          reason[:500] if isinstance(reason, str) else "")
    if verb == BYE:
        return Bye()
    raise ProtocolError(f"unknown backend verb {verb[:16]!r}")
