"""Value objects shared by every part of zexec."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class UserIdentity:
    """Who a bearer token belongs to, as the identity provider said.

    ``user_id`` is the provider's ``sub`` claim: the key servers are routed by.
    """

    user_id: str
    username: str = ""
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Event:
    """One event of a call's stream, as a client sees it.

    ``kind`` is one of the ``EV_*`` names of :mod:`zexec.core.protocol`; ``header`` the
    decoded JSON header; ``buffers`` the payload frames (a serialized value) if any.
    """

    call_id: bytes
    kind: str
    seq: int
    header: dict[str, Any]
    buffers: tuple[Any, ...] = ()

    @property
    def final(self) -> bool:
        from zexec.core.protocol import FINAL_EVENTS

        return self.kind in FINAL_EVENTS
