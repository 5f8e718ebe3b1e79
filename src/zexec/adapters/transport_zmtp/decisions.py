"""What the gateway's handler decides about a message from its first frames (see
:meth:`zexec.adapters.transport_zmtp.gateway.Handler.on_head`)."""

from __future__ import annotations

from dataclasses import dataclass

from zexec.core.errors import ZexecError


@dataclass(frozen=True, slots=True)
class Admit:
    """The message may be read whole: its sender showed a valid credential."""


@dataclass(frozen=True, slots=True)
class Wait:
    """Stop reading this connection until :meth:`Gateway.decide` (a token check)."""


@dataclass(frozen=True, slots=True)
class Discard:
    """Read and drop the rest of the message; the handler answers it with ``why``."""

    why: ZexecError


@dataclass(frozen=True, slots=True)
class Close:
    reason: str


ADMIT, WAIT = Admit(), Wait()
Decision = Admit | Wait | Discard | Close
