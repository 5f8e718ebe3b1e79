"""The broker's control port: an operator's command and the broker's answer.

* request (DEALER -> broker ROUTER): ``[b"", admin_token, command, *args]``
* answer: ``[b"", json]``, a JSON object with ``ok`` and, by command, ``status``,
  ``server``, ``message`` or ``error``.

Commands: ``STATUS`` (everything, for operators), ``SERVER user_id`` (what that user's
registered server last said of itself, or null: one user's readiness without the whole
status), ``TERMINATE`` (drain and stop).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from zexec.core.protocol.common import frame_bytes

STATUS = b"STATUS"
SERVER = b"SERVER"
TERMINATE = b"TERMINATE"


def control_request(admin_token: str, command: bytes, *args: bytes) -> list[Any]:
    return [b"", admin_token.encode(), command, *args]


class ControlRequest(NamedTuple):
    token: bytes
    command: bytes
    args: tuple[bytes, ...] = ()


def parse_control_request(body: Sequence[Any]) -> ControlRequest | None:
    """A control request (after the routing id; the empty delimiter is optional), or
    None when it does not carry a token and a command."""
    parts = [frame_bytes(f) for f in body]
    if parts and parts[0] == b"":
        parts = parts[1:]
    if len(parts) < 2:
        return None
    return ControlRequest(parts[0], parts[1], tuple(parts[2:]))


def control_reply(answer: dict[str, Any]) -> list[Any]:
    return [b"", json.dumps(answer).encode()]


def parse_control_reply(frames: Sequence[Any]) -> dict[str, Any]:
    """The broker's answer (``ValueError`` if it is not JSON)."""
    return json.loads(frame_bytes(frames[-1]))
