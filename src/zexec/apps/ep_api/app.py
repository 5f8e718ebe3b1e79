"""The Endpoint (EP) API (FastAPI): the front door ``ndp_ep.APIClient`` talks to.

Routes (the NDP EP API contract as ``ndp-ep`` 0.9.0 uses it):

* ``GET /`` (reachability), ``GET /health``
* ``GET /status/``: ``version`` / ``api_version`` (the contract level, >= 0.2.0 so
  ndp-ep does not warn), the zexec version, catalog kind, whether rexec is enabled
* ``GET /status/rexec``: ``{"deployment_api_url": ...}`` (404 when not configured)
* ``GET /user/info``: the caller's claims (Bearer; 401 / 403 / 503 with a message)
* ``GET /search?terms=..&terms=..[&keys=..][&server=..][&limit=..]``: list of datasets
  (every term must match; ``keys`` one per term, ``null`` = any field)
* ``POST /search``: advanced search, body :class:`AdvancedSearch`
* ``POST /user/login``: forwards ``{"username","password"}`` to a configured login
  service, else 501 with advice
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from zexec.apps.http_common import (
    bearer_token,
    error_response,
    identify,
    install_error_handlers,
    lifespan_closing,
    zexec_version,
)
from zexec.core.catalog import MAX_LIMIT
from zexec.core.ports import Authenticator, Catalog
from zexec.settings import EPSettings

#: The NDP EP API contract level this implementation serves (ndp-ep 0.9.0 needs 0.2.0).
EP_API_VERSION = "0.2.0"

Server = Literal["local", "global", "pre-ckan", "pre_ckan"]
#: ``login(username, password) -> {"access_token": ...}``; raises Unauthenticated etc.
Login = Callable[[str, str], dict[str, Any]]

_ERR = {
    "description": "see detail",
    "content": {"application/json": {"schema": {"type": "object", "properties": {"detail": {}}}}},
}


class AdvancedSearch(BaseModel):
    """Body of ``POST /search`` (all optional, combined with AND; see
    :class:`zexec.core.ports.Catalog`). ``server`` is accepted for compatibility: this
    endpoint has one catalog."""

    model_config = ConfigDict(extra="forbid")

    dataset_name: str | None = None
    dataset_title: str | None = None
    dataset_description: str | None = None
    owner_org: str | None = None
    search_term: str | None = Field(None, description="comma-separated keywords, all must occur")
    filter_list: list[str] | None = Field(None, description='["field:value", ...]')
    resource_url: str | None = None
    resource_name: str | None = None
    resource_description: str | None = None
    resource_format: str | None = None
    server: Server = "local"
    limit: int = Field(100, ge=1, le=MAX_LIMIT)


class LoginRequest(BaseModel):
    username: str
    password: str


def user_info(identity) -> dict[str, Any]:
    """The claims ``/user/info`` returns: the IdP's, with sub/username/groups/roles set."""
    return {
        **identity.claims,
        "sub": identity.user_id,
        "username": identity.username,
        "groups": list(identity.groups),
        "roles": list(identity.roles),
    }


def create_app(
    settings: EPSettings,
    catalog: Catalog,
    authenticator: Authenticator,
    *,
    login: Login | None = None,
    catalog_kind: str | None = None,
    closers: Sequence[Callable[[], Any]] = (),
    max_body_size: int | None = None,
) -> FastAPI:
    """The EP API over a catalog and an authenticator. ``login`` enables
    ``POST /user/login``; ``closers`` run at shutdown; request bodies over
    ``max_body_size`` bytes get 413."""
    version = settings.version or EP_API_VERSION
    app = FastAPI(
        title="zexec EP API",
        version=version,
        description="Endpoint API: status, remote-execution discovery, user info, datasets.",
        lifespan=lifespan_closing(closers),
        max_body_size=max_body_size,
    )
    install_error_handlers(app)
    deploy_url = settings.deploy_api_url.rstrip("/")

    @app.get("/")
    def root() -> str:
        """Reachability check."""
        return "API is running successfully."

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/status/")
    def status() -> dict[str, Any]:
        """API version and what this endpoint offers."""
        return {
            "status": "ok",
            "version": version,
            "api_version": version,
            "zexec_version": zexec_version(),
            "local_catalog_backend": catalog_kind or settings.catalog,
            "rexec_enabled": bool(deploy_url),
            "login_enabled": login is not None,
        }

    @app.get("/status/rexec", responses={404: _ERR})
    def status_rexec() -> Any:
        """Where the Deploy API is (clients append ``/rexec``)."""
        if not deploy_url:
            return error_response(
                404,
                "remote execution is not configured on this endpoint "
                "(the operator sets ZEXEC_EP_DEPLOY_API_URL)",
            )
        return {"deployment_api_url": deploy_url}

    @app.get("/user/info", responses={401: _ERR, 403: _ERR, 503: _ERR})
    async def get_user_info(request: Request) -> dict[str, Any]:
        """The caller's identity as the identity provider describes it."""
        return user_info(await identify(authenticator, bearer_token(request)))

    @app.get("/search", responses={400: _ERR, 503: _ERR})
    def search(
        terms: Annotated[list[str], Query(description="terms that must all match")],
        keys: Annotated[
            list[str] | None,
            Query(description="one field per term; 'null' searches every field"),
        ] = None,
        server: Annotated[
            Server, Query(description="accepted; this endpoint has one catalog")
        ] = "global",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> list[dict[str, Any]]:
        """Datasets matching every term (best first)."""
        return catalog.search(list(terms), list(keys) if keys else None, limit)

    @app.post("/search", responses={400: _ERR, 503: _ERR})
    def advanced_search(body: AdvancedSearch) -> list[dict[str, Any]]:
        """Datasets matching every given field."""
        return catalog.advanced_search(body.model_dump(exclude_none=True))

    @app.post("/user/login", responses={401: _ERR, 501: _ERR, 503: _ERR})
    async def user_login(body: LoginRequest) -> Any:
        """Exchange a username and password for a token, where the site allows it."""
        if login is None:
            return error_response(
                501,
                "password login is not available on this endpoint; get a token from "
                "your identity provider and pass it as APIClient(base_url, token=...)",
            )
        return await run_in_threadpool(login, body.username, body.password)

    return app
