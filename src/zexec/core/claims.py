"""Turning an identity provider's claims into a :class:`UserIdentity` (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zexec.core.groups import group_name
from zexec.core.model import UserIdentity


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list | tuple):
        return ()
    return tuple(n for n in map(group_name, value) if n)


def identity_from_claims(claims: Mapping[str, Any]) -> UserIdentity:
    """The identity the claims describe.

    ``sub`` (a non-empty string or an integer) becomes ``user_id``; ``username`` falls
    back to ``preferred_username`` (Keycloak, OIDC); ``groups`` keep the provider's
    names (dicts reduced to their path or name); ``roles`` fall back to Keycloak's
    ``realm_access.roles``. Raises ``ValueError`` when ``sub`` is missing or unusable;
    each caller maps that to its own error (a broken provider vs. a bad token).
    """
    sub = claims.get("sub")
    if isinstance(sub, int) and not isinstance(sub, bool):
        sub = str(sub)
    if not isinstance(sub, str) or not sub.strip():
        raise ValueError("claims have no usable 'sub'")
    username = claims.get("username") or claims.get("preferred_username") or ""
    roles = claims.get("roles")
    if roles is None and isinstance(claims.get("realm_access"), dict):
        roles = claims["realm_access"].get("roles")
    return UserIdentity(
        user_id=sub,
        username=username if isinstance(username, str) else str(username),
        groups=_strings(claims.get("groups")),
        roles=_strings(roles),
        claims=dict(claims),
    )
