"""A development identity provider: the HTTP contract of a real ``AUTH_API_URL``
(``POST /auth`` with ``{"token"}``, ``GET /auth`` with a Bearer header) over a local
token file, so one machine can run the whole stack without a site's IdP."""

from zexec.apps.devidp.app import create_app
from zexec.apps.devidp.tokens import generate_tokens, user_id_for

__all__ = ["create_app", "generate_tokens", "user_id_for"]
