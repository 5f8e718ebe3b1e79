"""HTTP plumbing shared by the Deploy API and the EP API (FastAPI).

* :func:`install_error_handlers` maps zexec's errors to status codes with a ``detail``
  message a user can act on: Unauthenticated 401 (with ``WWW-Authenticate: Bearer``),
  Forbidden 403, AuthUnavailable 503 (with ``Retry-After``), InvalidEnvironment 422,
  EnvironmentConflict 409, InvalidQuery 400, CatalogUnavailable / OrchestratorError 503.
  Anything else is logged with its traceback and answered 500 without internals.
* :func:`bearer_token` reads ``Authorization: Bearer <token>``.
* :func:`identify` runs the (blocking) authenticator in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from zexec.core import errors as E
from zexec.core.model import UserIdentity
from zexec.core.ports import Authenticator

log = logging.getLogger(__name__)

#: Error class -> (HTTP status, extra headers). Checked in order (subclasses first).
STATUS_OF: tuple[tuple[type[E.ZexecError], int, dict[str, str]], ...] = (
    (E.Unauthenticated, 401, {"WWW-Authenticate": "Bearer"}),
    (E.Forbidden, 403, {}),
    (E.AuthUnavailable, 503, {"Retry-After": "5"}),
    (E.InvalidEnvironment, 422, {}),
    (E.EnvironmentConflict, 409, {}),
    (E.InvalidQuery, 400, {}),
    (E.CatalogUnavailable, 503, {"Retry-After": "5"}),
    (E.OrchestratorError, 503, {"Retry-After": "5"}),
)

#: Prefix of each status' message, so a user can tell what kind of failure it was.
_LEAD = {
    401: "not authenticated",
    403: "forbidden",
    409: "conflict",
    422: "invalid environment",
}

MISSING_TOKEN = (
    "no token: send the header 'Authorization: Bearer <token>' "
    "(or, for spawn/terminate, the form field 'token')"
)


def error_response(
    http_status: int,
    detail: Any,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """A JSON error body ``{**extra, "detail": ...}`` (``extra``: e.g. ``code``)."""
    return JSONResponse(
        {**(extra or {}), "detail": detail}, status_code=http_status, headers=headers
    )


def status_for(exc: E.ZexecError) -> tuple[int, dict[str, str]]:
    for cls, status, headers in STATUS_OF:
        if isinstance(exc, cls):
            return status, headers
    return 500, {}


def describe(exc: E.ZexecError, status: int) -> str:
    """The user-facing message: ``"<kind>: <reason>"`` unless the reason says it already."""
    msg = str(exc) or exc.__class__.__name__
    if status == 503 and isinstance(exc, E.AuthUnavailable):
        lead = "identity provider unavailable"
    else:
        lead = _LEAD.get(status, "")
    return msg if not lead or msg.lower().startswith(lead) else f"{lead}: {msg}"


def install_error_handlers(app: FastAPI) -> None:
    """Register the zexec error -> HTTP mapping (and a safe catch-all) on ``app``."""

    async def on_zexec_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, E.ZexecError)
        status, headers = status_for(exc)
        if status >= 500 and status != 503:
            log.error(
                "unhandled %s on %s %s", exc.code, request.method, request.url.path, exc_info=exc
            )
            return error_response(
                500, "internal error; see the server log", extra={"code": exc.code}
            )
        return error_response(status, describe(exc, status), headers, {"code": exc.code})

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error; see the server log", extra={"code": "INTERNAL"})

    app.add_exception_handler(E.ZexecError, on_zexec_error)
    app.add_exception_handler(Exception, on_unexpected)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def identify(authenticator: Authenticator, token: str | None) -> UserIdentity:
    """The caller's identity; Unauthenticated when there is no token. The authenticator
    may block on its identity provider, so it runs in a worker thread."""
    if not token:
        raise E.Unauthenticated(MISSING_TOKEN)
    return await run_in_threadpool(authenticator.authenticate, token)


def lifespan_closing(closers: Sequence[Callable[[], Any]]):
    """A lifespan that calls each of ``closers`` (in reverse) when the app stops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            yield
        finally:
            for close in reversed(list(closers)):
                try:
                    await run_in_threadpool(close)
                except Exception:  # closing must not hide the other closers
                    log.exception("error while closing %r", close)

    return lifespan


def zexec_version() -> str:
    """The installed zexec distribution's version ("0+unknown" from a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zexec")
    except PackageNotFoundError:
        return "0+unknown"
