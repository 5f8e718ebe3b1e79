"""An :class:`~zexec.core.ports.Authenticator` over a fixed token -> claims mapping.

File format (also the development IdP's): a JSON object mapping each token to its
claims, e.g. ``{"<token>": {"sub": "u-1", "username": "alice", "groups": ["zexec-users"]}}``.
Every entry needs a ``sub``. Errors never name a token: a bad entry is identified by
its position in the file.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from zexec.core.claims import identity_from_claims
from zexec.core.errors import ConfigurationError, Unauthenticated
from zexec.core.groups import parse_allowed_groups, require_groups
from zexec.core.model import UserIdentity
from zexec.core.tokencache import token_key

log = logging.getLogger(__name__)


def load_token_file(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read a token file; raise :class:`ConfigurationError` saying what is wrong."""
    p = Path(path)
    if not str(path):
        raise ConfigurationError("no token file given")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read token file {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        # Only the position: the message of a JSON error may quote a token.
        raise ConfigurationError(
            f"token file {p} is not valid JSON (line {getattr(exc, 'lineno', '?')})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"token file {p} must hold a JSON object: token -> claims")
    try:
        if os.name == "posix" and p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("token file %s is readable by other users; chmod 600 it", p)
    except OSError:
        pass
    return data


class StaticAuthenticator:
    """Knows a fixed set of tokens; any other token is :class:`Unauthenticated`.

    Tokens are held by their SHA-256 only, so they do not linger in memory dumps and
    lookup time does not depend on how much of a guessed token matches.
    """

    def __init__(
        self,
        mapping: Mapping[str, Mapping[str, Any]],
        allowed_groups: Iterable[str] | str | None = (),
    ) -> None:
        self.allowed_groups = parse_allowed_groups(allowed_groups)
        self._by_key: dict[bytes, UserIdentity] = {}
        for n, (token, claims) in enumerate(mapping.items(), start=1):
            if not isinstance(token, str) or not token:
                raise ConfigurationError(f"token entry #{n}: the token must be a non-empty string")
            if not isinstance(claims, Mapping):
                raise ConfigurationError(f"token entry #{n}: claims must be a JSON object")
            try:
                self._by_key[token_key(token)] = identity_from_claims(claims)
            except ValueError:
                raise ConfigurationError(f"token entry #{n}: claims need a 'sub'") from None

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], allowed_groups: Iterable[str] | str | None = ()
    ) -> StaticAuthenticator:
        """Tokens from a JSON file (see the module docstring for the format)."""
        return cls(load_token_file(path), allowed_groups)

    def authenticate(self, token: str) -> UserIdentity:
        identity = self._by_key.get(token_key(token)) if token else None
        if identity is None:
            raise Unauthenticated("unknown token")
        require_groups(identity.claims.get("groups"), self.allowed_groups)
        return identity

    def __len__(self) -> int:
        return len(self._by_key)
