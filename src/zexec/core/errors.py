"""The exception hierarchy users and APIs see.

Every error that crosses a process boundary carries a stable ``code`` (see
``docs/protocol.md``) so a client in any language can act on it without parsing text.
"""

from __future__ import annotations


class ZexecError(Exception):
    """Base class of every error zexec raises on purpose."""

    code = "INTERNAL"


class ConfigurationError(ZexecError):
    """A setting or argument is wrong; the message says which and what is allowed."""

    code = "BAD_CONFIG"


class UnknownSerializerError(ConfigurationError):
    """A serializer name that no installed plugin provides."""

    code = "UNKNOWN_SERIALIZER"


class AuthError(ZexecError):
    """Base of identity errors."""


class Unauthenticated(AuthError):
    """The token is missing, invalid or expired (HTTP 401)."""

    code = "UNAUTHENTICATED"


class Forbidden(AuthError):
    """The token is valid but the user may not do this (HTTP 403)."""

    code = "FORBIDDEN"


class AuthUnavailable(AuthError):
    """The identity provider could not be reached or answered nonsense (HTTP 503)."""

    code = "AUTH_UNAVAILABLE"


class CallError(ZexecError):
    """Base of errors of one remote call."""


class BrokerUnreachable(CallError):
    """The client could not reach the broker, or the broker stopped answering."""

    code = "BROKER_UNREACHABLE"


class ServerUnavailable(CallError):
    """No server is registered for the user, or it stopped responding mid-call."""

    code = "NO_SERVER"


class ServerGone(ServerUnavailable):
    """The user's server stopped heartbeating while the call was running."""

    code = "SERVER_GONE"


class CallLost(CallError):
    """The broker no longer knows the call (it restarted while the call was in flight)."""

    code = "CALL_LOST"


class VersionMismatch(CallError):
    """Client and server run different Python major.minor versions."""

    code = "VERSION_MISMATCH"


class SerializationError(CallError):
    """A payload could not be serialized or deserialized."""

    code = "SERIALIZATION"


class ProtocolError(CallError):
    """A peer sent frames that do not follow the protocol."""

    code = "BAD_REQUEST"


class Busy(CallError):
    """The broker is saturated (token checks, parked messages); retry shortly."""

    code = "BUSY"


class TooLarge(ProtocolError):
    """A message broke one of the broker's size limits (frame size, frame count); the
    message names the limit and its setting."""

    code = "TOO_LARGE"


class ShuttingDown(CallError):
    """The broker or server is draining and accepts no new calls."""

    code = "SHUTTING_DOWN"


class CallCancelled(CallError):
    """The call was cancelled (by the caller or by the server replacing its worker)."""

    code = "CANCELLED"


class CallTimeout(CallError, TimeoutError):
    """The call ran past its deadline; the remote work was killed."""

    code = "DEADLINE_EXCEEDED"


class WorkerDied(CallError):
    """The worker process running the call died (crash, out of memory, os._exit)."""

    code = "WORKER_DIED"


class RemoteError(CallError):
    """An exception raised by the remote function whose type is not importable here.

    ``type_name`` is the qualified name of the remote exception type and
    ``remote_traceback`` the formatted remote traceback (the exception's own traceback
    continues into the remote frames, like any remote exception's).
    """

    code = "REMOTE_EXCEPTION"

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback


class RemoteExit(CallError):
    """The remote function raised ``SystemExit`` (``sys.exit()``, ``exit()``),
    ``KeyboardInterrupt``, ``GeneratorExit`` or another exception that is not an
    ``Exception``: it ends the call, never the caller's program. ``type_name`` says
    which, ``exit_status`` is SystemExit's argument (None for the others). On the wire
    it is a remote exception (code ``REMOTE_EXCEPTION``) of this type."""

    code = "REMOTE_EXIT"

    def __init__(self, type_name: str, detail: str = "", exit_status: int | str | None = None):
        super().__init__(type_name, detail, exit_status)
        self.type_name = type_name
        self.detail = detail
        self.exit_status = exit_status

    def __str__(self) -> str:
        if self.type_name == "SystemExit":
            what = f"SystemExit({self.exit_status!r}) (sys.exit() or exit())"
        else:
            what = self.type_name + (f": {self.detail}" if self.detail else "")
        return f"the remote function raised {what}; the call ended, your program goes on"

    @classmethod
    def wrap(cls, exc: BaseException) -> RemoteExit:
        """The RemoteExit standing for ``exc``."""
        status = exc.code if isinstance(exc, SystemExit) else None
        if status is not None and not isinstance(status, int | str):
            status = repr(status)
        return cls(type(exc).__name__, "" if isinstance(exc, SystemExit) else str(exc), status)


#: (InvalidEnvironment, EnvironmentConflict and OrchestratorError are added below.)
#: Error classes by wire code, for clients turning an ERROR event back into an exception.
BY_CODE: dict[str, type[ZexecError]] = {
    cls.code: cls
    for cls in (
        ZexecError,
        ConfigurationError,
        UnknownSerializerError,
        Unauthenticated,
        Forbidden,
        AuthUnavailable,
        BrokerUnreachable,
        ServerUnavailable,
        ServerGone,
        CallLost,
        VersionMismatch,
        SerializationError,
        ProtocolError,
        TooLarge,
        ShuttingDown,
        Busy,
        CallCancelled,
        CallTimeout,
        WorkerDied,
    )
}


class InvalidEnvironment(ZexecError):
    """A requirement list that zexec refuses (HTTP 422); the message says why."""

    code = "INVALID_ENVIRONMENT"


class ResourceLimitExceeded(InvalidEnvironment):
    """Resources asked for beyond what the site allows (HTTP 422); the message names the
    limit, its value and the setting that holds it."""

    code = "RESOURCE_LIMIT"


class EnvironmentConflict(ZexecError):
    """The user's server runs other requirements and ``force`` was not given (HTTP 409)."""

    code = "ENVIRONMENT_CONFLICT"


class OrchestratorError(ZexecError):
    """The orchestrator could not provision or remove a server."""

    code = "ORCHESTRATOR"


BY_CODE.update({c.code: c for c in (InvalidEnvironment, ResourceLimitExceeded,
                                     EnvironmentConflict, OrchestratorError)})


class InvalidQuery(ZexecError):
    """A dataset search the catalog cannot run (HTTP 400); the message says why."""

    code = "BAD_QUERY"


class CatalogUnavailable(ZexecError):
    """The dataset catalog backend could not be reached or failed (HTTP 503)."""

    code = "CATALOG_UNAVAILABLE"


BY_CODE.update({c.code: c for c in (InvalidQuery, CatalogUnavailable)})


class ControlPlaneError(ZexecError):
    """The EP API or the Deploy API could not be reached, or answered something the SDK
    cannot use; the message names the URL and what went wrong."""

    code = "CONTROL_PLANE"


class EnvironmentFailed(ZexecError):
    """The user's server did not become ready. ``reason`` is the orchestrator's (e.g. the
    environment build failed) and ``log_tail`` the installer's or server's last lines."""

    code = "ENVIRONMENT_FAILED"

    def __init__(self, message: str, reason: str = "", log_tail: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.log_tail = tuple(log_tail)

    def __str__(self) -> str:
        base = super().__str__()
        if self.log_tail:
            return base + "\n\nLast lines of the server's log:\n" + "\n".join(self.log_tail)
        return base


class EnvironmentTimeout(EnvironmentFailed, TimeoutError):
    """The user's server was not ready within the time the caller allowed."""

    code = "ENVIRONMENT_TIMEOUT"


BY_CODE.update({c.code: c for c in (ControlPlaneError, EnvironmentFailed, EnvironmentTimeout)})
