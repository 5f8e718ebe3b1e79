"""A development identity provider: the HTTP contract of a real ``AUTH_API_URL``
(``POST /auth`` with ``{"token"}``, ``GET /auth`` with a Bearer header) over a local
token file, so one machine can run the whole stack without a site's IdP.

``create_app`` is imported on first use: ``zexec up`` needs only the token helpers, and
importing FastAPI would delay the start of every component by about half a second."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zexec.apps.devidp.tokens import generate_tokens, user_id_for

if TYPE_CHECKING:
    from zexec.apps.devidp.app import create_app

__all__ = ["create_app", "generate_tokens", "user_id_for"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from zexec.apps.devidp.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
