"""A cache of an identity provider's signing keys (JWKS), fetched over httpx.

Keys are refreshed after ``ttl``; a token signed by an unknown ``kid`` (key rotation)
triggers a refetch, but at most once per ``refetch_interval`` so a flood of forged
``kid`` values cannot turn into a flood of requests to the provider. When the provider
is unreachable, keys already known keep working (a stale key beats an outage).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import httpx
import jwt

from zexec.core.errors import AuthUnavailable, Unauthenticated

log = logging.getLogger(__name__)


class JwksCache:
    def __init__(
        self,
        url: str,
        client: httpx.Client,
        ttl: float = 300.0,
        refetch_interval: float = 5.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.ttl = ttl
        self.refetch_interval = refetch_interval
        self.timeout = timeout
        self._client = client
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._last_error = ""
        # Serialises fetches (one request however many callers need new keys), apart
        # from the lookups, which never wait behind a slow provider when keys are fresh.
        self._fetch_lock = threading.Lock()
        self._lock = threading.Lock()

    def key(self, kid: str | None) -> jwt.PyJWK:
        """The signing key for ``kid`` (None: the token names no key, usable only when
        the set has exactly one). Raises :class:`Unauthenticated` for a key the provider
        does not publish, :class:`AuthUnavailable` when the keys cannot be fetched."""
        found = self._lookup(kid)
        if found is not None and self._fresh():
            return found
        with self._fetch_lock:
            # Another caller may have fetched while this one waited for the lock.
            found = self._lookup(kid)
            if found is not None and self._fresh():
                return found
            if self._may_fetch():
                self._fetch()
                found = self._lookup(kid)
            if found is not None:
                return found  # maybe stale: the refresh failed or is rate-limited
            if self._fetched_at is None or self._last_error:
                raise AuthUnavailable(
                    f"signing keys at {self.url} are unavailable ({self._last_error or 'not fetched yet'})"
                )
            raise Unauthenticated("token signed by a key the identity provider does not publish")

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        with self._lock:
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            return self._keys.get(kid)

    def _fresh(self) -> bool:
        with self._lock:
            return self._fetched_at is not None and self._clock() - self._fetched_at < self.ttl

    def _may_fetch(self) -> bool:
        return (
            self._attempted_at is None
            or self._clock() - self._attempted_at >= self.refetch_interval
        )

    def _fetch(self) -> None:
        self._attempted_at = self._clock()
        try:
            resp = self._client.get(self.url, timeout=self.timeout)
            resp.raise_for_status()
            keyset = jwt.PyJWKSet.from_dict(resp.json())
        except httpx.HTTPError as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        except (ValueError, jwt.PyJWTError) as exc:
            self._failed(f"unusable key set: {exc}")
            return
        keys = {k.key_id: k for k in keyset.keys}
        with self._lock:
            self._keys = keys
            self._fetched_at = self._clock()
            self._last_error = ""
        log.info("fetched %d signing keys from %s", len(keys), self.url)

    def _failed(self, reason: str) -> None:
        self._last_error = reason
        log.warning("cannot fetch signing keys from %s: %s", self.url, reason)
