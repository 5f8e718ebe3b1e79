"""Caching and single-flight in front of any :class:`~zexec.core.ports.Authenticator`.

Outcomes (identity, rejection, "provider unavailable") are kept in a
:class:`~zexec.core.tokencache.TokenCache` with a TTL per kind. While a token is being
checked, other callers presenting the same token wait for that one check instead of
starting their own: a burst of calls from one user costs the identity provider one
request, not one per call.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable

from zexec.core.errors import AuthError, AuthUnavailable
from zexec.core.model import UserIdentity
from zexec.core.ports import Authenticator
from zexec.core.tokencache import Outcome, TokenCache, token_key

log = logging.getLogger(__name__)


class _Flight:
    """One check in progress: its waiters block on ``done``, then read ``outcome``."""

    __slots__ = ("done", "outcome", "waiters")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome: Outcome | None = None
        self.waiters = 0


def _deliver(outcome: Outcome) -> UserIdentity:
    if isinstance(outcome, UserIdentity):
        return outcome
    # Raise a copy: re-raising one cached instance from many threads would race on,
    # and keep growing, its __traceback__.
    raise copy.copy(outcome).with_traceback(None)


class CachingAuthenticator:
    """An :class:`Authenticator` that remembers ``inner``'s answers (thread-safe).

    ``clock`` (monotonic seconds) is injectable for tests. An unexpected exception from
    ``inner`` (a bug, not an auth outcome) reaches every waiting caller as
    :class:`AuthUnavailable` and is not cached. Tokens are never logged; the cache holds
    only their SHA-256.
    """

    def __init__(
        self,
        inner: Authenticator,
        cache: TokenCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.cache = cache if cache is not None else TokenCache()
        self.clock = clock
        # Guards cache and _flights: TokenCache itself is not thread-safe.
        self._lock = threading.Lock()
        self._flights: dict[bytes, _Flight] = {}

    def authenticate(self, token: str) -> UserIdentity:
        key = token_key(token)
        with self._lock:
            cached = self.cache.get(key, self.clock())
            if cached is not None:
                return _deliver(cached)
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                flight.waiters += 1
        if leader:
            return _deliver(self._check(key, token, flight))
        flight.done.wait()
        assert flight.outcome is not None
        return _deliver(flight.outcome)

    def _check(self, key: bytes, token: str, flight: _Flight) -> Outcome:
        # Defaults for a BaseException (KeyboardInterrupt) escaping ``inner``: waiters
        # must still be woken, with an outcome that is not cached.
        outcome: Outcome = AuthUnavailable("identity check was interrupted")
        cacheable = False
        try:
            outcome = self.inner.authenticate(token)
            cacheable = True
        except AuthError as exc:
            outcome = exc
            cacheable = True
        except Exception as exc:
            # Type only: a buggy authenticator's message might quote the token.
            log.error("authenticator %s failed: %s", type(self.inner).__name__, type(exc).__name__)
            outcome = AuthUnavailable(f"identity check failed unexpectedly ({type(exc).__name__})")
        finally:
            with self._lock:
                if cacheable:
                    self.cache.put(key, outcome, self.clock())
                del self._flights[key]
                flight.outcome = outcome
            flight.done.set()
        return outcome

    @property
    def waiting(self) -> int:
        """Callers now waiting for another caller's check of the same token (metrics)."""
        with self._lock:
            return sum(f.waiters for f in self._flights.values())

    def close(self) -> None:
        """Close ``inner`` if it has a ``close`` (authenticators owning HTTP clients)."""
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()
