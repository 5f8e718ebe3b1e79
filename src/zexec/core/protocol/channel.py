"""The server <-> worker channel: frames on the server's private ipc ROUTER, where each
worker is a DEALER (the ROUTER puts the worker's id in front of what it receives; the
functions here take and give the frames after it).

Start-up::

    worker -> server: [HELLO]
    server -> worker: [CONFIG, json]   (output flush settings, the broker link, crash files)
    worker -> server: [READY]

A call through the server (fresh-process mode, or a broker that sends the server calls)::

    server -> worker: [task_key, proto, call_id, client_id, header, fn, args, *buffers]
    worker -> server: [task_key, F|M, *client_body]   (no broker link: F on the last one)
    worker -> server: [task_key, D]                   (broker link: events sent to it)

A call the broker gave the worker directly (direct dispatch), of which the server needs
to hear only when it runs long (to drain)::

    worker -> server: ["", T, client_id, call_key, proto]   (the call has run a while)
    worker -> server: ["", D]                               (that call ended)

``proto`` is ``1`` (v1) or ``L`` (legacy); a legacy task has no call id and an empty
header. ``client_body`` is already in the client's protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from zexec.core.errors import ProtocolError
from zexec.core.protocol.common import DONE, FINAL, MORE, dump_header, frame_bytes, load_header

HELLO = b"HELLO"
CONFIG = b"CONFIG"
READY = b"READY"
STARTED = b"T"
V1 = b"1"
LEGACY = b"L"
#: The task key of messages about a call the broker gave the worker directly.
NO_TASK = b""
_EMPTY_HEADER = b"{}"


# --------------------------------------------------------------------------- start-up


def hello() -> list[Any]:
    return [HELLO]


def ready() -> list[Any]:
    return [READY]


def config(settings: dict[str, Any]) -> list[Any]:
    return [CONFIG, dump_header(settings)]


def parse_config(frames: Sequence[Any]) -> dict[str, Any]:
    """The settings in the server's answer to HELLO."""
    if len(frames) != 2 or frame_bytes(frames[0]) != CONFIG:
        raise ProtocolError("expected CONFIG from the server")
    return load_header(frames[1])


# --------------------------------------------------------------------------- server -> worker


def task(task_key: bytes, legacy: bool, call_id: bytes, client_id: bytes,
         rest: Sequence[Any]) -> list[Any]:
    """A call for a worker: ``rest`` is the call's own frames as the broker forwarded
    them (v1: ``[header, fn, args, *buffers]``; legacy: ``[fn, args]``)."""
    if legacy:
        return [task_key, LEGACY, b"", client_id, _EMPTY_HEADER, *rest]
    return [task_key, V1, call_id, client_id, *rest]


class Task(NamedTuple):
    key: bytes
    legacy: bool
    call_id: bytes
    client_id: bytes
    header: dict[str, Any]
    fn: Any
    args: list[Any]


def parse_task(frames: Sequence[Any]) -> Task:
    """Decode :func:`task`'s frames (the header is not parsed for a legacy task)."""
    if len(frames) < 6:
        raise ProtocolError("a task needs [key, proto, call_id, client_id, header, fn, ...]")
    key, proto, call_id, client_id = (frame_bytes(f) for f in frames[:4])
    legacy = proto == LEGACY
    header = {} if legacy else load_header(frames[4])
    return Task(key, legacy, call_id, client_id, header, frames[5], list(frames[6:]))


# --------------------------------------------------------------------------- worker -> server


def output(task_key: bytes, final: bool, body: Sequence[Any]) -> list[Any]:
    """Events of a task for the server to forward (``final`` on the last one)."""
    return [task_key, FINAL if final else MORE, *body]


def done(task_key: bytes = NO_TASK) -> list[Any]:
    """The task ended, its events sent to the broker; :data:`NO_TASK`: a direct call
    the server was told of ended."""
    return [task_key, DONE]


def started(client_id: bytes, call_key: bytes, legacy: bool) -> list[Any]:
    """A call the broker gave this worker has run long enough for the server to know."""
    return [NO_TASK, STARTED, client_id, call_key, LEGACY if legacy else V1]


# Named tuples and plain classes, not dataclasses: a worker imports this module at every
# start, and each frozen dataclass costs about a millisecond to create.
class _Signal:
    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Hello(_Signal):
    __slots__ = ()


class Ready(_Signal):
    __slots__ = ()


class Started(NamedTuple):
    client_id: bytes
    call_key: bytes
    legacy: bool


class Done(NamedTuple):
    task_key: bytes  # NO_TASK for a direct call


class Output(NamedTuple):
    task_key: bytes
    final: bool
    body: list[Any]


FromWorker = Hello | Ready | Started | Done | Output


def parse_from_worker(body: Sequence[Any]) -> FromWorker:
    """Decode what a worker sent (after its id). A flag other than ``M`` or ``D`` ends
    the task, so a confused worker cannot keep a call open."""
    if len(body) == 1:
        said = frame_bytes(body[0])
        if said == HELLO:
            return Hello()
        if said == READY:
            return Ready()
    if len(body) < 2:
        raise ProtocolError("a worker message needs [task_key, flag, ...]")
    key, flag = frame_bytes(body[0]), frame_bytes(body[1])
    if flag == DONE:
        return Done(key)
    if key == NO_TASK:
        if flag == STARTED and len(body) == 5:
            client_id, call_key, proto = (frame_bytes(f) for f in body[2:])
            return Started(client_id, call_key, proto == LEGACY)
        raise ProtocolError(f"unknown worker message {flag[:8]!r}")
    return Output(key, flag != MORE, list(body[2:]))
