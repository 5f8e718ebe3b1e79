"""The broker <-> server and broker <-> worker frames (the **backend**), after the
routing id:

* broker -> server: ``[b"", MAGIC, verb, client_id, call_key, user_id, *rest]``
* server -> broker: ``[b"", MAGIC, verb, *rest]``

A server that registers with ``"direct": true`` has its workers take calls on their own
backend connections (``WRDY``, then the broker -> server layout above, sent to the
worker); the server then only hears ``KILL`` for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from zexec.core.errors import ProtocolError
from zexec.core.protocol.common import (
    BYE,
    FINAL,
    KILL,
    MAGIC,
    MORE,
    REGISTER,
    REGISTER_ACK,
    REPLY,
    WORKER_GONE,
    WORKER_READY,
    WORKER_REPLY,
    dump_header,
    frame_bytes,
    load_header,
)


def to_server(
    verb: bytes, client_id: bytes, call_key: bytes, user_id: str, rest: Sequence[Any]
) -> list[Any]:
    """Frames the broker sends to a server (after the server's routing id)."""
    return [b"", MAGIC, verb, client_id, call_key, user_id.encode(), *rest]


#: Frames of :func:`to_server` before the call's own ``rest``.
TO_SERVER_HEAD = 6


def to_server_rest(frames: Sequence[Any]) -> list[Any]:
    """The call's own frames (``rest``) of :func:`to_server`'s ``frames``."""
    return list(frames[TO_SERVER_HEAD:])


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


def register_ack(answer: dict[str, Any]) -> list[Any]:
    """Broker -> server: the answer to a registration (``ok``; ``error`` if refused;
    ``last_call_ago``: seconds since the user's last call, for the idle timeout)."""
    return [b"", MAGIC, REGISTER_ACK, dump_header(answer)]


def parse_register_ack(body: Sequence[Any]) -> dict[str, Any] | None:
    """The answer in a broker -> server ``RACK`` (from the delimiter on), or None if
    ``body`` is another message."""
    if len(body) >= 4 and frame_bytes(body[0]) == b"" and frame_bytes(body[1]) == MAGIC \
            and frame_bytes(body[2]) == REGISTER_ACK:
        return load_header(body[3])
    return None


def bye() -> list[Any]:
    """Server -> broker: this server is going away."""
    return [b"", MAGIC, BYE]


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
