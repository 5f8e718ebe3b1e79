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
    """Outcomes by token key. Valid and refused tokens are kept apart, each bounded
    (oldest dropped first): a flood of random tokens fills only the refused side and
    never pushes a real user's valid token out of the cache."""

    def __init__(
        self,
        positive_ttl: float = 60.0,
        negative_ttl: float = 5.0,
        unavailable_ttl: float = 1.0,
        max_entries: int = 100_000,
        max_refused: int = 20_000,
    ) -> None:
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl
        self.unavailable_ttl = unavailable_ttl
        self.max_entries = max_entries
        self.max_refused = max_refused
        self._valid: OrderedDict[bytes, tuple[float, Outcome]] = OrderedDict()
        self._refused: OrderedDict[bytes, tuple[float, Outcome]] = OrderedDict()

    def get(self, key: bytes, now: float) -> Outcome | None:
        """The cached outcome, or None on a miss or an expired entry."""
        for entries in (self._valid, self._refused):
            entry = entries.get(key)
            if entry is None:
                continue
            expires, outcome = entry
            if now >= expires:
                del entries[key]
                return None
            return outcome
        return None

    def put(self, key: bytes, outcome: Outcome, now: float) -> None:
        if isinstance(outcome, UserIdentity):
            ttl, entries, limit, other = (self.positive_ttl, self._valid, self.max_entries,
                                          self._refused)
        else:
            ttl = self.unavailable_ttl if isinstance(outcome, AuthUnavailable) \
                else self.negative_ttl
            entries, limit, other = self._refused, self.max_refused, self._valid
        other.pop(key, None)
        entries[key] = (now + ttl, outcome)
        entries.move_to_end(key)
        while len(entries) > limit:
            entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._valid) + len(self._refused)
