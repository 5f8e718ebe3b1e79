"""Ports: the small interfaces the core and apps depend on.

Each port is a :class:`typing.Protocol`; adapters in :mod:`zexec.adapters` satisfy them
structurally (no inheritance needed) and tests use in-memory fakes of the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from zexec.core.model import EnvSpec, ServerStatus, UserIdentity


@runtime_checkable
class Serializer(Protocol):
    """Turns Python objects into frames and back.

    ``dumps`` returns ``[main, *buffers]``: the pickle stream, then pickle-protocol-5
    out-of-band buffers (large ``bytes``/``memoryview``/numpy data), each a separate
    frame so it crosses the wire without being copied into the stream. ``loads`` takes
    the same list (frames may be any buffer: ``bytes``, ``memoryview``, ``zmq.Frame``
    buffers). Raises :class:`~zexec.core.errors.SerializationError` on failure.

    ``name`` is what clients put in the call header (``"dill"``, ``"cloudpickle"``)
    and what ``@remote(serializer=...)`` accepts.
    """

    name: str

    def dumps(self, obj: Any) -> list[Any]: ...

    def loads(self, frames: Sequence[Any]) -> Any: ...


class Authenticator(Protocol):
    """Maps a bearer token to the user it belongs to.

    Blocking (it may call an identity provider): callers that must not block run it in
    a thread. Raises :class:`~zexec.core.errors.Unauthenticated` (invalid or expired),
    :class:`~zexec.core.errors.Forbidden` (valid, but not in an allowed group) or
    :class:`~zexec.core.errors.AuthUnavailable` (the provider could not answer).
    Never logs the token.
    """

    def authenticate(self, token: str) -> UserIdentity: ...


class Transport(Protocol):
    """A client's message connection to the broker: multipart messages, in order.

    ``send`` queues one message and returns False when there is no live connection to
    queue it on (the caller decides whether to retry or fail the call); it never blocks.
    ``recv`` returns the next message, or None when none arrives within ``timeout``
    seconds. ``close`` releases the connection; later calls are errors.
    """

    def send(self, frames: Sequence[Any]) -> bool: ...

    def recv(self, timeout: float) -> list[Any] | None: ...

    def close(self) -> None: ...


class Orchestrator(Protocol):
    """Provisions per-user servers: processes on this machine, pods on Kubernetes.

    ``ensure`` is idempotent: a server for ``user`` with the same ``spec.digest`` is left
    as it is; a different digest raises
    :class:`~zexec.core.errors.EnvironmentConflict` unless ``force``, which replaces
    it. It returns at once with the current status; building the environment and
    starting the server continue in the background (``status`` shows the phase:
    pending -> installing -> starting -> ready, or failed with a reason).
    ``terminate`` removes the user's server and returns whether there was one.
    ``status`` is None when the user has no server. Implementations never pass
    requirement strings through a shell.
    """

    def ensure(self, user: UserIdentity, spec: EnvSpec, force: bool = False) -> ServerStatus: ...

    def terminate(self, user_id: str) -> bool: ...

    def status(self, user_id: str) -> ServerStatus | None: ...

    def list(self) -> list[ServerStatus]: ...
