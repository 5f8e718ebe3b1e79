"""Group-based access: which identity-provider groups may use zexec.

Pure functions shared by every authenticator. Groups arrive in the shapes real
identity providers use: plain strings (``"researchers"``, Keycloak paths such as
``"/ndp_ep/ep-xyz"``) or dicts with ``"path"`` or ``"name"``. They are compared
case-insensitively with leading ``/`` ignored, so ``"/NDP_EP/ep-xyz"`` matches an
allowed ``"ndp_ep/ep-xyz"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from zexec.core.errors import Forbidden


def group_name(group: Any) -> str:
    """The display name of one group as the provider sent it (``""`` if unusable):
    a string as is, a dict's ``"path"`` (preferred: unique) or ``"name"``."""
    if isinstance(group, dict):
        group = group.get("path") or group.get("name") or ""
    return group.strip() if isinstance(group, str) else ""


def normalise_group(group: Any) -> str:
    """The comparison form of a group: its name, lower-cased, without leading ``/``."""
    return group_name(group).lstrip("/").casefold()


def parse_allowed_groups(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Allowed groups from a comma-separated setting (or an iterable); blanks dropped."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    return tuple(g.strip() for g in items if g and g.strip())


def group_allowed(groups: Iterable[Any] | None, allowed: Iterable[Any] | None) -> bool:
    """Whether any of ``groups`` is one of ``allowed``; no allowed groups = everyone."""
    wanted = {n for n in map(normalise_group, allowed or ()) if n}
    if not wanted:
        return True
    # A provider may send a single group as a bare string; don't iterate its letters.
    if isinstance(groups, str | dict):
        groups = [groups]
    return any(normalise_group(g) in wanted for g in groups or ())


def require_groups(groups: Iterable[Any] | None, allowed: Iterable[Any] | None) -> None:
    """Raise :class:`Forbidden` naming the required groups unless :func:`group_allowed`."""
    if not group_allowed(groups, allowed):
        names = ", ".join(sorted({group_name(a) for a in allowed or ()} - {""}))
        raise Forbidden(f"user is not a member of any allowed group (one of: {names})")
