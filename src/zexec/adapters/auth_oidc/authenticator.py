"""An :class:`~zexec.core.ports.Authenticator` validating OIDC access tokens locally.

The token is a JWT signed by the identity provider; its signature is checked against
the provider's JWKS (:class:`~zexec.adapters.auth_oidc.jwks.JwksCache`), then ``exp``,
``iss`` and ``aud``: no request to the provider per token. Only asymmetric algorithms
are accepted (``none`` and shared-secret HMAC would let anyone mint tokens).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import httpx
import jwt

from zexec.adapters.auth_oidc.jwks import JwksCache
from zexec.core.claims import identity_from_claims
from zexec.core.errors import ConfigurationError, Unauthenticated
from zexec.core.groups import parse_allowed_groups, require_groups
from zexec.core.model import UserIdentity

ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)


class OidcAuthenticator:
    """Validates JWTs issued by ``issuer`` for ``audience`` (either empty = unchecked;
    set both in production). ``leeway`` seconds of clock skew are tolerated on
    ``exp``/``nbf``/``iat``; ``clock`` only drives the key cache's timing."""

    def __init__(
        self,
        jwks_url: str,
        issuer: str = "",
        audience: str = "",
        allowed_groups: Iterable[str] | str | None = (),
        client: httpx.Client | None = None,
        jwks_ttl: float = 300.0,
        refetch_interval: float = 5.0,
        timeout: float = 5.0,
        leeway: float = 30.0,
        algorithms: Iterable[str] = ALGORITHMS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not jwks_url:
            raise ConfigurationError("the JWKS URL of the OIDC provider is empty")
        unsafe = {a for a in algorithms if a not in ALGORITHMS}
        if unsafe:
            raise ConfigurationError(
                f"unsupported JWT algorithms {sorted(unsafe)}; use {ALGORITHMS}"
            )
        self.issuer = issuer
        self.audience = audience
        self.allowed_groups = parse_allowed_groups(allowed_groups)
        self.leeway = leeway
        self.algorithms = list(algorithms)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self.jwks = JwksCache(jwks_url, self._client, jwks_ttl, refetch_interval, timeout, clock)

    def authenticate(self, token: str) -> UserIdentity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed token (not a JWT)") from None
        if header.get("alg") not in self.algorithms:
            raise Unauthenticated(f"token signed with a refused algorithm ({header.get('alg')!r})")
        kid = header.get("kid")
        key = self.jwks.key(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=self.algorithms,
                audience=self.audience or None,
                issuer=self.issuer or None,
                leeway=self.leeway,
                options={"require": ["exp", "sub"], "verify_aud": bool(self.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.PyJWTError as exc:
            # PyJWT's messages name the failed check, never the token.
            raise Unauthenticated(f"invalid token: {exc}") from None
        try:
            identity = identity_from_claims(claims)
        except ValueError:
            raise Unauthenticated("token has no usable 'sub' claim") from None
        require_groups(claims.get("groups"), self.allowed_groups)
        return identity

    def close(self) -> None:
        """Close the HTTP client if this authenticator created it."""
        if self._owns_client:
            self._client.close()
