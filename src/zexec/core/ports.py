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
    frame so it crosses the wire without being copied into the stream; with
    ``out_of_band=False`` everything stays in the one ``main`` frame. ``loads`` takes
    the same list (frames may be any buffer: ``bytes``, ``memoryview``, ``zmq.Frame``
    buffers). Raises :class:`~zexec.core.errors.SerializationError` on failure.

    ``name`` is what clients put in the call header (``"dill"``, ``"cloudpickle"``)
    and what ``@remote(serializer=...)`` accepts.
    """

    name: str

    def dumps(self, obj: Any, out_of_band: bool = True) -> list[Any]: ...

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
    seconds or when another thread called ``wake`` (the one thread-safe method: it lets
    the I/O thread that owns the transport notice new work at once). ``close`` releases
    the connection; later calls are errors.
    """

    def send(self, frames: Sequence[Any]) -> bool: ...

    def recv(self, timeout: float) -> list[Any] | None: ...

    def wake(self) -> None: ...

    def close(self) -> None: ...


class Orchestrator(Protocol):
    """Provisions per-user servers: processes on this machine, pods on Kubernetes.

    ``ensure`` is idempotent: a server for ``user`` with the same ``spec.digest`` is left
    as it is; a different digest raises
    :class:`~zexec.core.errors.EnvironmentConflict` unless ``force``, which replaces
    it: a ready server keeps serving while the new one is built beside it and is
    stopped only once that one is ready; if it fails, the old one goes on (the rules are
    :mod:`zexec.core.replacing`'s, shared by every implementation). It returns at once
    with the status; building the environment and starting the server continue in the
    background (``status`` shows the phase: pending -> installing -> starting -> ready,
    or failed with a reason; during a replacement, that of the new server, with the one
    still serving as ``previous``).
    A server in a terminal phase (``failed``, or ``terminated`` after exiting on its
    idle timeout) is no conflict: ``ensure`` starts a new one, whatever its digest.
    ``terminate`` removes the user's server (and a replacement) and returns whether
    there was one. ``cancel(user_id, digest)`` stops a build under way (of ``digest``,
    or any when None): a replacement is dropped and the previous server goes on, a first
    server not yet ready is removed; it returns whether there was one to stop.
    ``status`` is None when the user has no server. ``ensure`` raises
    :class:`~zexec.core.errors.InvalidEnvironment` when this orchestrator cannot serve
    the spec (e.g. no such Python here) and
    :class:`~zexec.core.errors.OrchestratorError` when the platform fails (retryable).
    Implementations never pass requirement strings through a shell.
    """

    def ensure(self, user: UserIdentity, spec: EnvSpec, force: bool = False) -> ServerStatus: ...

    def terminate(self, user_id: str) -> bool: ...

    def cancel(self, user_id: str, digest: str | None = None) -> bool: ...

    def status(self, user_id: str) -> ServerStatus | None: ...

    def list(self) -> list[ServerStatus]: ...


class Catalog(Protocol):
    """Dataset discovery for the EP API: an embedded SQLite full-text index or a CKAN site.

    Results are NDP "datasource" dicts, whatever the backend:
    ``{"id", "name", "title", "owner_org", "description", "resources": [{"id", "url",
    "name", "description", "format"}], "extras": {...}, "tags": [...]}`` (``owner_org`` is
    the organization's name, ``description`` the package's ``notes``), best match first,
    at most ``limit``.

    ``search(terms, keys, limit)``: every term must match (AND). ``keys`` is None or one
    entry per term: None (or ``"null"``) searches the term everywhere, a field name
    (``name``, ``title``, ``notes``/``description``, ``tags``,
    ``organization``/``owner_org``, or an extras key) searches only that field.
    Terms are data, never query syntax: quotes or operators in them are matched literally.

    ``advanced_search(query)``, the body of ``POST /search`` (all fields optional, AND):
    ``dataset_name`` (exact name), ``dataset_title``, ``dataset_description``,
    ``owner_org`` (organization name), ``search_term`` (comma-separated keywords, each
    must occur), ``filter_list`` (``["field:value", ...]``, exact value of a field, an
    extras key or a tag), ``resource_url``, ``resource_name``, ``resource_description``,
    ``resource_format`` (a dataset is kept when one of its resources matches all given
    resource fields; only those resources are returned), ``limit``. Unknown keys are
    ignored here (the API validates the body).

    Blocking (callers run it in a thread). Raises
    :class:`~zexec.core.errors.InvalidQuery` for a query it cannot run and
    :class:`~zexec.core.errors.CatalogUnavailable` when the backend cannot answer.
    """

    def search(
        self, terms: list[str], keys: list[str | None] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]: ...

    def advanced_search(self, query: dict[str, Any]) -> list[dict[str, Any]]: ...


class PoolWorker(Protocol):
    """One worker process of a :class:`WorkerPool`, as the server loop sees it."""

    wid: bytes  # its id on the server's worker channel
    broker_id: bytes  # its routing id on the broker's backend (direct dispatch)
    pidfd: int  # readable once the process has exited
    proc: Any  # the process (``returncode`` once reaped)
    ready: bool  # said READY and runs no call
    task: Any  # the call it runs (:class:`zexec.core.server.calls.Task`), or None
    retired: bool  # killed on purpose: its death is expected
    reason: str  # why the server killed it, for the call it ran


class WorkerPool(Protocol):
    """The per-user server's warm worker processes (``zexec.apps.server.pool``).

    ``direct``: workers take calls from the broker on their own connections.
    ``idle()`` is a ready worker without a call, or None; ``kill`` stops one (its exit
    then shows on its ``pidfd``), ``reap(fd)`` collects the one that exited,
    ``death(w)`` says what it left (its call's unsent output, how it died);
    ``config_for(w)`` is what the worker is told when it says HELLO.
    """

    size: int
    direct: bool
    worker_prefix: str
    workers: dict[bytes, Any]
    by_broker_id: dict[bytes, Any]

    def adopt(self, proc: Any, wid: bytes) -> PoolWorker: ...

    def spawn(self) -> PoolWorker: ...

    def idle(self) -> PoolWorker | None: ...

    def kill(self, w: PoolWorker) -> None: ...

    def reap(self, fd: int) -> PoolWorker: ...

    def death(self, w: PoolWorker) -> Any: ...

    def config_for(self, w: PoolWorker) -> dict[str, Any]: ...

    def close(self, grace: float = 2.0) -> None: ...


class PoolBinder(Protocol):
    """An orchestrator's warm pool, as the Deploy API's binding route sees it: a pool
    pod's server, started before any user, asks which user has adopted it."""

    def bind(self, pod: str, key: str) -> tuple[str, str] | None:
        """``(user id, broker credential)`` once pod ``pod`` (proving itself with ``key``)
        is adopted, None while it waits; raises PermissionError for a wrong key, an
        unknown pod, or a pod that had its binding already (never twice)."""
        ...

    def wait(self, pod: str, timeout: float) -> None:
        """Return after ``timeout`` seconds, or sooner when pod ``pod`` was claimed in
        this process (the time between two :meth:`bind` of a waiting request)."""
        ...

    def registered(self, pod: str, key: str) -> None:
        """Pod ``pod``'s server, bound, has registered with the broker (its user's
        status may say ready now); PermissionError as for :meth:`bind`, or when the pod
        is not bound."""
        ...


class ServerRegistry(Protocol):
    """Which servers the broker has registered, as an orchestrator asks: a server is
    ready for its user once the broker routes to it, which the broker knows before any
    readiness probe's next period."""

    def server_info(self, user_id: str) -> dict[str, Any] | None:
        """What ``user_id``'s registered server last said of itself (``name``, ``pid``,
        ``python``, ``stopping``...), or None when none is registered *or the broker did
        not answer* (soon: this is asked while a user waits): a caller falls back to its
        own readiness signal then, never to "failed"."""
        ...
