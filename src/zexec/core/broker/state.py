"""The broker's routing state: what it knows of servers, workers and calls, and the
texts legacy clients are answered with."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zexec.core import protocol as p

FRONT = "front"
BACK = "back"
#: Seconds a server's in-flight v1 calls wait, after its BYE, for their workers' last
#: events (sent on the workers' own connections) before failing with SERVER_GONE.
BYE_GRACE = 1.0

# Strings the deployed broker answered legacy clients with (they print them).
LEGACY_BAD_TOKEN = "Token validation failed."
LEGACY_AUTH_DOWN = "Token validation failed: identity provider unavailable."
LEGACY_NO_SERVER = "Server not ready/available for user {user}."
LEGACY_DRAINING = "Broker is shutting down; try again shortly."
LEGACY_BUSY = "Broker is busy; try again shortly."
LEGACY_ONE_CALL = "A call is already running on this connection."
LEGACY_SERVER_STOPPING = "The server of user {user} is shutting down; try again shortly."

Key = tuple[bytes, bytes]  # (client routing id, call key)


@dataclass
class ServerEntry:
    rid: bytes
    user_id: str
    last_seen: float
    info: dict[str, Any] = field(default_factory=dict)
    # Direct dispatch (see the module docstring); unused for other servers.
    workers: set[bytes] = field(default_factory=set)
    idle: list[bytes] = field(default_factory=list)  # a stack: the warmest worker first
    #: Calls waiting for a worker, oldest first: (frames, size in bytes).
    queued: OrderedDict[Key, tuple[list[Any], int]] = field(default_factory=OrderedDict)
    queued_bytes: int = 0

    @property
    def direct(self) -> bool:
        return self.info.get("direct") is True

    @property
    def stopping(self) -> bool:
        return self.info.get("stopping") is True

    @property
    def worker_prefix(self) -> bytes:
        """What its workers' routing ids start with (``info["worker_prefix"]``; empty:
        any)."""
        prefix = self.info.get("worker_prefix")
        return prefix.encode() if isinstance(prefix, str) else b""


@dataclass
class WorkerEntry:
    rid: bytes
    user_id: str
    server_rid: bytes
    call: Key | None = None  # the call it runs


@dataclass
class InFlight:
    user_id: str
    legacy: bool
    server_rid: bytes | None  # None while the token is being checked
    started: float
    direct: bool = False  # dispatched by the broker to a worker (see the module docstring)
    worker_rid: bytes | None = None  # direct dispatch: the worker running it
    timeout: float | None = None  # direct dispatch: it expires at started + timeout


@dataclass
class Parked:
    rid: bytes
    msg: p.FrontendMessage


def started_at(info: dict[str, Any]) -> float:
    """When a server started (epoch seconds, from its registration; 0 if it did not say)."""
    value = info.get("started", 0.0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else 0.0


def size_of(frames: Sequence[Any]) -> int:
    """Bytes in ``frames`` (what a queued call holds in the broker's memory)."""
    return sum(len(f) for f in frames)
