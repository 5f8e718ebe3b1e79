"""The development identity provider's FastAPI app.

Answers like a real identity provider: 200 with the token's claims, 401 (with
``WWW-Authenticate: Bearer``) otherwise. It does not apply group restrictions; as with
a real provider, that is left to the zexec services' ``allowed_groups``.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from zexec.adapters.auth_static import StaticAuthenticator
from zexec.core.errors import Unauthenticated


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"detail": "invalid or expired token"},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def create_app(tokens_file: str | os.PathLike[str], max_body_size: int | None = None) -> FastAPI:
    """The app serving the tokens of ``tokens_file`` (read once, now: a bad file fails
    here with :class:`~zexec.core.errors.ConfigurationError`, not at the first request);
    request bodies over ``max_body_size`` bytes get 413."""
    tokens = StaticAuthenticator.from_file(tokens_file)
    app = FastAPI(title="zexec development identity provider", docs_url=None, redoc_url=None,
                  max_body_size=max_body_size)

    def answer(token: Any) -> JSONResponse:
        if not isinstance(token, str) or not token:
            return _unauthorized()
        try:
            identity = tokens.authenticate(token)
        except Unauthenticated:
            return _unauthorized()
        return JSONResponse(identity.claims)

    @app.post("/auth")
    async def auth_post(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _unauthorized()
        return answer(body.get("token") if isinstance(body, dict) else None)

    @app.get("/auth")
    async def auth_get(request: Request) -> JSONResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return answer(token.strip() if scheme.lower() == "bearer" else None)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "users": len(tokens)}

    return app
