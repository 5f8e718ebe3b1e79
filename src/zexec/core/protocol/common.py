"""What every frame layout shares: the marker and verbs, header frames, credentials.

No sockets anywhere in :mod:`zexec.core.protocol`: every function takes and returns
lists of frames (``bytes`` or any buffer), so framing is tested without I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from zexec.core.errors import ProtocolError
from zexec.core.model import (  # noqa: F401  (event kinds are part of the protocol)
    EV_CANCELLED,
    EV_ERROR,
    EV_OUTPUT,
    EV_RETURN,
    EV_YIELD,
    FINAL_EVENTS,
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
