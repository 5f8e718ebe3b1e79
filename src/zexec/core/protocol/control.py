"""The broker's control port: an operator's command and the broker's answer.

* request (DEALER -> broker ROUTER): ``[b"", admin_token, command]``
* answer: ``[b"", json]``, a JSON object with ``ok`` and, by command, ``status``,
  ``message`` or ``error``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from zexec.core.protocol.common import frame_bytes

STATUS = b"STATUS"
TERMINATE = b"TERMINATE"


def control_request(admin_token: str, command: bytes) -> list[Any]:
    return [b"", admin_token.encode(), command]


class ControlRequest(NamedTuple):
    token: bytes
    command: bytes


def parse_control_request(body: Sequence[Any]) -> ControlRequest | None:
    """A control request (after the routing id; the empty delimiter is optional), or
    None when it does not carry a token and a command."""
    parts = [frame_bytes(f) for f in body]
    if parts and parts[0] == b"":
        parts = parts[1:]
    if len(parts) < 2:
        return None
    return ControlRequest(parts[0], parts[1])


def control_reply(answer: dict[str, Any]) -> list[Any]:
    return [b"", json.dumps(answer).encode()]


def parse_control_reply(frames: Sequence[Any]) -> dict[str, Any]:
    """The broker's answer (``ValueError`` if it is not JSON)."""
    return json.loads(frame_bytes(frames[-1]))
