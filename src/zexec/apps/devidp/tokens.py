"""Token files for the development identity provider (format: see
:mod:`zexec.adapters.auth_static`)."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

#: Namespace of the development users' ids: the same name gets the same ``sub`` on
#: every machine and every regeneration, so servers keyed by it survive new tokens.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://zexec.invalid/devidp/users")
DEFAULT_GROUP = "zexec-users"


def user_id_for(username: str) -> str:
    """The stable, uuid-shaped ``sub`` of a development user."""
    return str(uuid.uuid5(_NAMESPACE, username))


def generate_tokens(
    path: str | os.PathLike[str], users: Iterable[str] = ("alice", "bob")
) -> dict[str, str]:
    """Write a fresh token file for ``users`` (replacing any previous one) and return
    ``{username: token}``. The file is created with mode 0600 before any token is
    written, and swapped in atomically, so no reader ever sees a partial or
    world-readable file."""
    users = list(dict.fromkeys(users))  # keep order, drop duplicates
    if not users or not all(isinstance(u, str) and u for u in users):
        raise ValueError("users must be non-empty names")
    tokens = {name: secrets.token_urlsafe(32) for name in users}
    mapping = {
        tokens[name]: {"sub": user_id_for(name), "username": name, "groups": [DEFAULT_GROUP]}
        for name in users
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=target.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(mapping, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tokens
