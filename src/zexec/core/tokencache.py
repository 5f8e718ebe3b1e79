"""A cache of token-validation outcomes, keyed by a hash of the token.

Used by the broker (non-blocking: a miss means "ask in the background") and by
:class:`zexec.adapters.auth_cache.CachingAuthenticator` (blocking callers). Valid tokens
are kept ``positive_ttl`` seconds, rejected ones ``negative_ttl`` and "provider
unavailable" only ``unavailable_ttl`` so an outage does not outlive itself in the cache.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from zexec.core.errors import AuthError, AuthUnavailable
from zexec.core.model import UserIdentity

Outcome = UserIdentity | AuthError


def token_key(token: str) -> bytes:
    """Cache key of a token: its SHA-256, so raw tokens are never kept as dict keys."""
    return hashlib.sha256(token.encode()).digest()


class TokenCache:
    def __init__(
        self,
        positive_ttl: float = 60.0,
        negative_ttl: float = 5.0,
        unavailable_ttl: float = 1.0,
        max_entries: int = 100_000,
    ) -> None:
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.unavailable_ttl = unavailable_ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[float, Outcome]] = OrderedDict()

    def get(self, key: bytes, now: float) -> Outcome | None:
        """The cached outcome, or None on a miss or an expired entry."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, outcome = entry
        if now >= expires:
            del self._entries[key]
            return None
        return outcome

    def put(self, key: bytes, outcome: Outcome, now: float) -> None:
        if isinstance(outcome, UserIdentity):
            ttl = self.positive_ttl
        elif isinstance(outcome, AuthUnavailable):
            ttl = self.unavailable_ttl
        else:
            ttl = self.negative_ttl
        self._entries[key] = (now + ttl, outcome)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
