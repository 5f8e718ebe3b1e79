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


# Event kinds (the v1 event header's "e" field). They live beside Event, a leaf module,
# so that the protocol module can build on Event without the two importing each other.
EV_OUTPUT = "out"
EV_YIELD = "yield"
EV_RETURN = "return"
EV_ERROR = "error"
EV_CANCELLED = "cancelled"
FINAL_EVENTS = frozenset({EV_RETURN, EV_ERROR, EV_CANCELLED})


@dataclass(frozen=True)
class Event:
    """One event of a call's stream, as a client sees it.

    ``kind`` is one of the ``EV_*`` names above (re-exported by :mod:`zexec.core.protocol`); ``header`` the
    decoded JSON header; ``buffers`` the payload frames (a serialized value) if any.
    """

    call_id: bytes
    kind: str
    seq: int
    header: dict[str, Any]
    buffers: tuple[Any, ...] = ()

    @property
    def final(self) -> bool:
        return self.kind in FINAL_EVENTS


#: Phases of a user's server, in order; ``failed`` and ``terminated`` are terminal.
PHASES = ("pending", "installing", "starting", "ready", "failed", "terminated")


@dataclass(frozen=True)
class Resources:
    """What one user's server may use, as asked for (None = the site's default, which is
    the orchestrator's behaviour without a request). Validated and normalised by
    :func:`zexec.core.resources.parse_resources`.

    ``cpus``: CPU cores (float, like Ray's ``num_cpus`` and Modal's ``cpu``; Kubernetes
    millicore precision); ``memory``: MiB (int, like Modal's ``memory``); ``gpus``:
    whole GPUs; ``workers``: worker processes of the server (calls run this many at a
    time)."""

    cpus: float | None = None
    memory: int | None = None
    gpus: int | None = None
    workers: int | None = None

    @property
    def default(self) -> bool:
        """Nothing asked for: the site's defaults throughout."""
        return self == Resources()


@dataclass(frozen=True)
class EnvSpec:
    """What a user's server runs: an exact Python ``major.minor`` and normalised
    requirements (sorted, canonical names). ``digest`` identifies the set: the same
    requirements in any order give the same digest. Build with
    :func:`zexec.core.envspec.parse_env_spec`, which validates.

    ``resources`` are part of what a server runs (another request is another server)
    but not of ``digest``, which keys the installed environment: the same requirements
    with other resources reuse the same built venv / install cache."""

    python: str
    requirements: tuple[str, ...]
    digest: str
    resources: Resources = Resources()

    def same_server(self, other: EnvSpec) -> bool:
        """Whether a server running ``self`` serves a request for ``other``."""
        return self.digest == other.digest and self.resources == other.resources


@dataclass(frozen=True)
class ServerStatus:
    """Observable state of one user's server."""

    user_id: str
    phase: str
    env: EnvSpec | None = None
    reason: str = ""
    #: Last lines of the installer's or server's output, for failed/installing phases.
    log_tail: tuple[str, ...] = ()
    #: Epoch seconds when the server entered ``phase``.
    since: float = 0.0
    #: While a forced replacement is built beside it (and after one failed), the server
    #: that keeps serving the user meanwhile; None otherwise.
    previous: ServerStatus | None = None
    #: What the server got (requests filled with the site's defaults; None where the
    #: orchestrator sets no bound), and what of it is not enforced, in words.
    resources: Resources | None = None
    resources_note: str = ""
