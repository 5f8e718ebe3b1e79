"""The :class:`~zexec.core.ports.Authenticator` of the deployed identity-provider contract.

Two request shapes are in use (legacy-protocol.md, section 2), selected by ``mode``:
``http-post`` sends ``{"token": ...}`` as JSON, ``http-get`` sends
``Authorization: Bearer ...``. 200 carries the claims, 401 means invalid or expired,
403 insufficient permissions; everything else (no answer, 5xx, a body that is not a
claims object) means the provider is unavailable, which callers must not confuse with
"bad token". Error messages never contain the token.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import httpx

from zexec.core.claims import identity_from_claims
from zexec.core.errors import AuthUnavailable, ConfigurationError, Forbidden, Unauthenticated
from zexec.core.groups import parse_allowed_groups, require_groups
from zexec.core.model import UserIdentity

log = logging.getLogger(__name__)

MODES = ("http-post", "http-get")
#: Longer tokens are refused before reaching the provider (which would answer 431/413
#: and make a garbage token look like an outage).
MAX_TOKEN_LENGTH = 16 * 1024


def check_token_shape(token: str) -> None:
    """Refuse tokens no provider issues: empty, too long, or with characters outside
    printable ASCII. Besides saving a round trip, this keeps control characters out of
    HTTP headers, where the HTTP library's error message would quote the token."""
    if not token:
        raise Unauthenticated("no token given")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthenticated("malformed token (too long)")
    if not all("!" <= c <= "~" for c in token):
        raise Unauthenticated("malformed token (unexpected characters)")


class HttpAuthenticator:
    """Validates tokens by asking the identity provider at ``url``.

    ``allowed_groups`` (list or comma-separated string) restricts access to members of
    those groups (:mod:`zexec.core.groups`). ``client`` lets callers share or mock an
    :class:`httpx.Client`; without it the authenticator owns one (see :meth:`close`).
    Thread-safe; no caching here (wrap in
    :class:`~zexec.adapters.auth_cache.CachingAuthenticator`).
    """

    def __init__(
        self,
        url: str,
        mode: str = "http-post",
        timeout: float = 5.0,
        allowed_groups: Iterable[str] | str | None = (),
        client: httpx.Client | None = None,
    ) -> None:
        if not url:
            raise ConfigurationError("the identity provider URL is empty")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"identity provider URL must be http(s): {url!r}")
        if mode not in MODES:
            raise ConfigurationError(f"unknown HTTP auth mode {mode!r}; use one of {MODES}")
        self.url = url
        self.mode = mode
        self.timeout = timeout
        self.allowed_groups = parse_allowed_groups(allowed_groups)
        self._owns_client = client is None
        # Every request goes to ``url``: certificates (~40 ms to load) only for https.
        self._client = client if client is not None else httpx.Client(
            timeout=timeout, verify=url.startswith("https://"))

    def authenticate(self, token: str) -> UserIdentity:
        check_token_shape(token)
        claims = self._fetch_claims(token)
        try:
            identity = identity_from_claims(claims)
        except ValueError:
            raise AuthUnavailable(
                f"identity provider at {self.url} returned claims without a usable 'sub'"
            ) from None
        require_groups(claims.get("groups"), self.allowed_groups)
        return identity

    def _fetch_claims(self, token: str) -> dict[str, Any]:
        failure = ""
        try:
            if self.mode == "http-post":
                resp = self._client.post(self.url, json={"token": token}, timeout=self.timeout)
            else:
                headers = {"Authorization": f"Bearer {token}"}
                resp = self._client.get(self.url, headers=headers, timeout=self.timeout)
        except httpx.TimeoutException:
            failure = f"did not answer within {self.timeout:g}s"
        except httpx.HTTPError as exc:
            failure = f"is unreachable ({_scrub(f'{type(exc).__name__}: {exc}', token)})"
        if failure:
            # Raised outside the handler so the HTTP error, which may quote request
            # details, is not chained as __context__.
            raise self._unavailable(failure)
        if resp.status_code == 401:
            raise Unauthenticated("token rejected by the identity provider (invalid or expired)")
        if resp.status_code == 403:
            raise Forbidden("the identity provider denied access (403)")
        if not resp.is_success:
            raise self._unavailable(f"answered HTTP {resp.status_code}")
        try:
            claims = resp.json()
        except ValueError:
            claims = None
        if not isinstance(claims, dict):
            raise self._unavailable("answered without a JSON object of claims")
        return claims

    def _unavailable(self, what: str) -> AuthUnavailable:
        log.warning("identity provider %s %s", self.url, what)
        return AuthUnavailable(f"identity provider at {self.url} {what}")

    def close(self) -> None:
        """Close the HTTP client if this authenticator created it."""
        if self._owns_client:
            self._client.close()


def _scrub(text: str, token: str) -> str:
    """``text`` with every occurrence of ``token`` masked (belt and braces)."""
    return text.replace(token, "***") if token else text
