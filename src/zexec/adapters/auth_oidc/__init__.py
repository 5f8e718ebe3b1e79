"""Local JWT validation against an OpenID Connect provider's published keys (JWKS)."""

from zexec.adapters.auth_oidc.authenticator import OidcAuthenticator
from zexec.adapters.auth_oidc.jwks import JwksCache

__all__ = ["JwksCache", "OidcAuthenticator"]
