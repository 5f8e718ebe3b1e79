"""Token validation against an HTTP identity provider (``AUTH_API_URL``)."""

from zexec.adapters.auth_http.authenticator import HttpAuthenticator

__all__ = ["HttpAuthenticator"]
