"""The Deploy API (FastAPI): spawn, status and terminate a caller's server.

Routes, all under ``settings.prefix`` (``/rexec``):

* ``POST /spawn``: form-encoded as ``scidx-rexec`` 0.1.0 sends it (``requirments``
  repeated - sic -, ``token``, ``force_reinstall`` "True"/"False"; ``requirements`` is
  accepted too) or JSON ``{"requirements": [...], "force": bool, "wait": seconds}``
  with optional ``cpus``, ``memory`` (MiB), ``gpus``, ``workers`` (see
  :mod:`zexec.core.resources`; beyond a site limit: 422 naming it).
  The token comes from the ``token`` field or ``Authorization: Bearer``. Same
  environment again: 200, unchanged; another one: 409 unless forced; bad requirements:
  422 with the reason. Form (legacy) spawns wait up to ``settings.legacy_spawn_wait``
  seconds for the server to be ready, because those clients call it right away; a
  build that fails meanwhile is answered 422 with the reason and the installer's tail.
* ``DELETE /terminate``: form field ``token`` or Bearer; 200 whether or not a server
  was running (``terminated`` says which).
* ``GET /status``: the caller's server (phase, progress, reason, log tail, since, env,
  and ``previous``: the server still serving during a forced replacement); 404 when
  there is none.
* ``POST /cancel``: stop the caller's environment build under way (JSON body
  ``{"digest": ...}`` optional: only that environment's): a replacement is dropped and
  the previous server goes on; a first server not yet ready is removed. 200 with
  ``cancelled`` true/false.
* ``GET /broker-config``: where clients reach the broker (no token needed).
* ``GET /healthz``, ``GET /metrics`` (Prometheus text).
* ``POST /pool/bind``: for warm-pool pods only (see :mod:`.pool_routes`).

The caller's identity always comes from the token; no route takes a user id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from zexec.apps.deploy_api import service
from zexec.apps.deploy_api.metrics import DeployMetrics
from zexec.apps.deploy_api.pool_routes import add_pool_routes
from zexec.apps.http_common import (
    bearer_token,
    error_response,
    identify,
    install_error_handlers,
    lifespan_closing,
    zexec_version,
)
from zexec.core.errors import ConfigurationError, EnvironmentConflict, InvalidEnvironment
from zexec.core.model import EnvSpec, UserIdentity
from zexec.core.ports import Authenticator, Orchestrator
from zexec.core.resources import FIELDS, ResourceLimits, parse_resources
from zexec.settings import DeploySettings

ParseSpec = Callable[..., EnvSpec]
#: Longest wait a JSON spawn may ask for, in seconds.
MAX_JSON_WAIT = 3600.0

_REQS = {"type": "array", "items": {"type": "string"}}
_ERR = {
    "description": "see detail",
    "content": {"application/json": {"schema": {"type": "object", "properties": {"detail": {}}}}},
}
SPAWN_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "requirments": {
                            **_REQS,
                            "description": "one requirement per field (legacy name)",
                        },
                        "requirements": _REQS,
                        "token": {"type": "string"},
                        "force_reinstall": {"type": "string", "enum": ["True", "False"]},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["requirements"],
                    "properties": {
                        "requirements": _REQS,
                        "force": {"type": "boolean"},
                        "wait": {"type": "number", "minimum": 0, "maximum": MAX_JSON_WAIT},
                        "token": {"type": "string"},
                        "cpus": {"type": ["number", "null"], "exclusiveMinimum": 0,
                                 "description": "CPU cores (site limit ZEXEC_DEPLOY_MAX_CPUS)"},
                        "memory": {"type": ["integer", "null"], "minimum": 1,
                                   "description": "MiB (site limit ZEXEC_DEPLOY_MAX_MEMORY)"},
                        "gpus": {"type": ["integer", "null"], "minimum": 0},
                        "workers": {"type": ["integer", "null"], "minimum": 1},
                    },
                }
            },
        },
    }
}
TERMINATE_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": {"token": {"type": "string"}}}
            },
        },
    }
}
CANCEL_DOC: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {"type": "object", "properties": {"digest": {"type": "string"}}}
            },
        },
    }
}
_AUTH_ERRORS = {401: _ERR, 403: _ERR, 503: _ERR}


def normalise_prefix(prefix: str) -> str:
    """``"rexec/"`` -> ``"/rexec"``; ``""`` or ``"/"`` -> ``""``."""
    p = "/" + prefix.strip().strip("/")
    return "" if p == "/" else p


async def read_spawn_request(request: Request) -> dict[str, Any]:
    """The spawn fields of a form or JSON body: requirements, force, token, wait, legacy.

    Raises InvalidEnvironment (422) for a body that does not have the documented shape.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            raise InvalidEnvironment("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise InvalidEnvironment('the JSON body must be an object {"requirements": [...]}')
        reqs = body.get("requirements", body.get("requirments"))
        if not isinstance(reqs, list) or not all(isinstance(r, str) for r in reqs):
            raise InvalidEnvironment('"requirements" must be a list of strings')
        wait = body.get("wait", 0)
        if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait:
            raise InvalidEnvironment('"wait" must be a number of seconds >= 0')
        token = body.get("token")
        return {
            "requirements": reqs,
            "force": service.parse_flag(
                body.get("force", body.get("force_reinstall", False)), "force"
            ),
            "token": token if isinstance(token, str) else None,
            "wait": min(float(wait), MAX_JSON_WAIT),
            "legacy": False,
            "resources": {k: body[k] for k in FIELDS if k in body},
        }
    form = await request.form()
    values = [*form.getlist("requirments"), *form.getlist("requirements")]
    if any(isinstance(v, UploadFile) for v in [*values, form.get("token")]):
        raise InvalidEnvironment("send requirements and token as text fields, not files")
    token = form.get("token")
    return {
        "requirements": [str(v) for v in values],
        "force": service.parse_flag(form.get("force_reinstall", "False"), "force_reinstall"),
        "token": str(token) if token else None,
        "wait": None,  # the legacy default, decided by settings
        "legacy": True,
        "resources": {},  # the released clients ask for none: the site's defaults
    }


async def read_cancel_digest(request: Request) -> str | None:
    """The ``digest`` of a cancel's optional JSON body (None: any build)."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        raise InvalidEnvironment("the body is not valid JSON") from None
    digest = body.get("digest") if isinstance(body, dict) else None
    if digest is not None and not isinstance(digest, str):
        raise InvalidEnvironment('"digest" must be a string')
    return digest


async def form_token(request: Request) -> str | None:
    """The ``token`` field of a form body, if the request has one."""
    ctype = request.headers.get("content-type", "").lower()
    if "form" not in ctype:
        return None
    token = (await request.form()).get("token")
    return token if isinstance(token, str) and token else None


async def body_caller(
    authenticator: Authenticator, token: str | None, bearer: str | None,
    caller: UserIdentity | None,
) -> UserIdentity:
    """Who is calling, given the body's token field (which wins, as the legacy clients
    expect) and the already checked Bearer token's ``caller``."""
    if token and token != bearer:
        return await identify(authenticator, token)
    return caller or await identify(authenticator, token)


def broker_tls_pin(settings: DeploySettings) -> str:
    """The SHA-256 pin of the broker's certificate (``broker_tls_cert_file``), "" when
    none is configured; a file that cannot be read is a configuration error at start."""
    if not settings.broker_tls_cert_file:
        return ""
    from zexec.adapters.transport_zmtp.tls import file_pin

    try:
        return file_pin(settings.broker_tls_cert_file)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"ZEXEC_DEPLOY_BROKER_TLS_CERT_FILE: cannot read a "
                                 f"certificate from {settings.broker_tls_cert_file}: {exc}"
                                 ) from None


def create_app(
    settings: DeploySettings,
    orchestrator: Orchestrator,
    authenticator: Authenticator,
    *,
    parse_spec: ParseSpec | None = None,
    metrics: DeployMetrics | None = None,
    closers: Sequence[Callable[[], Any]] = (),
    max_body_size: int | None = None,
    resource_limits: ResourceLimits | None = None,
) -> FastAPI:
    """The Deploy API over the given collaborators.

    ``parse_spec(requirements, allow_unsafe=...)`` validates requirement lists (default
    :func:`zexec.core.envspec.parse_env_spec`); ``metrics`` defaults to a fresh registry;
    ``closers`` run when the app shuts down (the composition root passes the
    orchestrator's ``close``); a request body over ``max_body_size`` bytes gets 413
    before it is read (or as soon as a chunked body passes it); ``resource_limits``
    bound what a spawn may ask for (default: :func:`service.resource_limits` of
    ``settings``).
    """
    if parse_spec is None:
        from zexec.core.envspec import parse_env_spec as parse_spec
    prefix = normalise_prefix(settings.prefix)
    limits = resource_limits or service.resource_limits(settings)
    tls_pin = broker_tls_pin(settings)
    metrics = metrics or DeployMetrics(orchestrator)
    app = FastAPI(
        title="zexec Deploy API",
        version=zexec_version(),
        description="Spawns, reports and terminates per-user zexec servers.",
        lifespan=lifespan_closing(closers),
        max_body_size=max_body_size,
    )
    app.state.metrics = metrics
    app.state.orchestrator = orchestrator
    install_error_handlers(app)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        return response

    @app.post(
        prefix + "/spawn", openapi_extra=SPAWN_DOC, responses={409: _ERR, 422: _ERR, **_AUTH_ERRORS}
    )
    async def spawn(request: Request) -> JSONResponse:
        """Ensure the caller's server runs the given requirements (see module doc)."""
        # A Bearer header is checked before the body is read: its owner's body is
        # parsed only once the caller is known. (A form token, as the legacy clients
        # send it, can only be read with the body, which BodyLimit keeps small.)
        bearer = bearer_token(request)
        caller = await identify(authenticator, bearer) if bearer else None
        try:
            fields = await read_spawn_request(request)
        except InvalidEnvironment:
            metrics.spawns.labels("invalid").inc()
            raise
        user = await body_caller(authenticator, fields["token"], bearer, caller)
        try:
            spec = parse_spec(
                fields["requirements"], allow_unsafe=settings.allow_unsafe_requirements
            )
            spec = replace(spec, resources=parse_resources(fields["resources"], limits))
            result = await run_in_threadpool(
                service.spawn, orchestrator, user, spec, fields["force"]
            )
        except (InvalidEnvironment, EnvironmentConflict) as exc:
            kind = "invalid" if isinstance(exc, InvalidEnvironment) else "conflict"
            metrics.spawns.labels(kind).inc()
            raise
        wait = settings.legacy_spawn_wait if fields["wait"] is None else fields["wait"]
        status = result.status
        if wait > 0 and status.phase not in service.SETTLED:
            status = await service.wait_settled(orchestrator, user.user_id, wait) or status
        result = service.SpawnResult(status, result.outcome)
        body = service.status_view(status, user)
        body.update(outcome=result.outcome, message=service.spawn_message(result, user, prefix))
        if status.phase == "failed":
            metrics.spawns.labels("failed").inc()
            reason = status.reason or "see log_tail"
            return error_response(422, f"environment build failed: {reason}", extra=body)
        metrics.spawns.labels(result.outcome).inc()
        return JSONResponse(body)

    @app.delete(prefix + "/terminate", openapi_extra=TERMINATE_DOC, responses=_AUTH_ERRORS)
    async def terminate(request: Request) -> dict[str, Any]:
        """Stop and remove the caller's server (interrupting its work)."""
        bearer = bearer_token(request)
        caller = await identify(authenticator, bearer) if bearer else None
        user = await body_caller(authenticator, await form_token(request), bearer, caller)
        existed = await run_in_threadpool(orchestrator.terminate, user.user_id)
        who = user.username or user.user_id
        metrics.terminates.labels("terminated" if existed else "absent").inc()
        return {
            "status": "terminated" if existed else "not_found",
            "terminated": existed,
            "user": who,
            "message": f"server of {who} terminated"
            if existed
            else f"{who} had no server; nothing to terminate",
        }

    @app.post(prefix + "/cancel", openapi_extra=CANCEL_DOC, responses=_AUTH_ERRORS)
    async def cancel(request: Request) -> dict[str, Any]:
        """Stop the caller's environment build under way (see module doc)."""
        user = await identify(authenticator, bearer_token(request))
        digest = await read_cancel_digest(request)
        done = await run_in_threadpool(orchestrator.cancel, user.user_id, digest)
        st = await run_in_threadpool(orchestrator.status, user.user_id)
        who = user.username or user.user_id
        if not done:
            message = f"{who} had no environment build under way; nothing cancelled"
        elif st is not None:
            message = f"build cancelled; the server of {who} keeps serving"
        else:
            message = f"build cancelled; {who} has no server now"
        return {"cancelled": done, "message": message,
                "status": None if st is None else service.status_view(st, user)}

    @app.get(prefix + "/status", responses={404: _ERR, **_AUTH_ERRORS})
    async def status(request: Request) -> Any:
        """The caller's server: phase, progress, reason, log tail, since, environment."""
        user = await identify(authenticator, bearer_token(request))
        st = await run_in_threadpool(orchestrator.status, user.user_id)
        if st is None:
            who = user.username or user.user_id
            return error_response(
                404,
                f"{who} has no server; spawn one with POST {prefix}/spawn",
                extra={"status": "absent", "phase": "absent"},
            )
        return service.status_view(st, user)

    @app.get(prefix + "/broker-config")
    async def broker_config() -> dict[str, Any]:
        """Where clients reach the broker (the same for every user)."""
        host, port = settings.broker_external_host, settings.broker_external_port
        config: dict[str, Any] = {
            "broker_external_host": host,
            "broker_external_port": port,
            "broker_external_url": f"{host}:{port}",
        }
        if tls_pin:
            # Extra keys: the released clients ignore them; the zexec SDK connects to
            # the encrypted port and accepts exactly this certificate.
            config["broker_external_secure_port"] = settings.broker_external_secure_port
            config["broker_tls_sha256"] = tls_pin
        return config

    binder = getattr(orchestrator, "pool", None)
    if binder is not None:  # the warm pool's pods ask for their user here
        add_pool_routes(app, prefix, binder)

    @app.get(prefix + "/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the process answers (it does not call the orchestrator)."""
        return {"status": "ok", "orchestrator": settings.orchestrator, "time": time.time()}

    @app.get(prefix + "/metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition of this instance's registry."""
        from prometheus_client import CONTENT_TYPE_LATEST

        data = await run_in_threadpool(metrics.render)
        return Response(data, media_type=CONTENT_TYPE_LATEST)

    return app
