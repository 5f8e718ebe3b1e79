"""The state directory of ``zexec up``: its paths, private files and errors.

Every file holding a secret is written with mode 0600 from its first byte (``mkstemp``)
and swapped in atomically, so no reader sees a partial or world-readable file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zexec.apps.guard import StackError, UsageError  # noqa: F401  (the CLI's errors)

#: The development users ``zexec up`` makes tokens for.
USERS = ("alice", "bob")


class StateDir:
    """Paths inside a state directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.stack_json = self.root / "stack.json"
        self.tokens = self.root / "tokens.json"
        self.tls_cert = self.root / "broker_tls.crt"
        self.ports = self.root / "ports.json"
        # Named after the settings they hold: the directory is ZEXEC_SECRETS_DIR.
        self.secrets = self.root / "secrets"
        self.secret = self.secrets / "ZEXEC_BROKER_SERVER_SECRET"
        self.admin = self.secrets / "ZEXEC_BROKER_ADMIN_TOKEN"
        self.tls_key = self.secrets / "broker_tls.key"
        self.logs = self.root / "logs"
        self.orchestrator = self.root / "orchestrator"
        self.users = self.root / "users"

    def prepare(self, traversable: bool) -> None:
        """Create the private directories (0700); move secrets from where zexec before
        ``secrets/`` kept them. ``traversable``: other uids may pass through the state
        directory (not list it): the users' servers reach their environment through it
        when they run as their own uids without a sandbox."""
        for sub in (self.logs, self.secrets):
            sub.mkdir(mode=0o700, exist_ok=True)
            os.chmod(sub, 0o700)
        self.orchestrator.mkdir(exist_ok=True)
        for old, new in (("server_secret", self.secret), ("admin_token", self.admin),
                         ("broker_tls.key", self.tls_key)):
            if (self.root / old).exists() and not new.exists():
                os.replace(self.root / old, new)
        mode = self.root.stat().st_mode
        if traversable and not mode & 0o001:
            os.chmod(self.root, (mode & 0o7777) | 0o011)

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise ``up``/``down`` on one directory (two ``up`` at once would race
        for the ports and both write stack.json)."""
        # A new directory is private (tokens and secrets); an existing one is left as
        # it is (it may be a project directory), its secret files are 0600 anyway.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def load(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.stack_json.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StackError(f"cannot read {self.stack_json}: {exc}") from None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte, atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def secret_file(path: Path) -> str:
    """The secret stored in ``path``, created (random, 0600) if missing or empty."""
    with contextlib.suppress(OSError):
        value = path.read_text().strip()
        if value:
            os.chmod(path, 0o600)
            return value
    value = secrets.token_urlsafe(32)
    write_private(path, value + "\n")
    return value


def tls_files(cert: Path, key: Path, host: str) -> str:
    """The pin (SHA-256) of the broker's TLS certificate in ``cert``, made with its key
    (0600) for ``host`` if either file is missing or unreadable. Kept across ``up``s, so
    a pin a client learnt stays valid."""
    from zexec.adapters.transport_zmtp.tls import file_pin, make_self_signed

    with contextlib.suppress(OSError, ValueError):
        if key.is_file():
            os.chmod(key, 0o600)
            return file_pin(cert)
    make_self_signed(cert, key, [host, "localhost"])
    return file_pin(cert)


def dev_tokens(path: Path) -> dict[str, str]:
    """``{user: token}`` for USERS from the IdP token file, generating a new file if it
    lacks one of them."""
    from zexec.apps.devidp import generate_tokens

    with contextlib.suppress(OSError, ValueError, AttributeError):
        mapping = json.loads(path.read_text())
        found = {claims.get("username"): tok for tok, claims in mapping.items()}
        if all(u in found for u in USERS):
            os.chmod(path, 0o600)
            return {u: found[u] for u in USERS}
    return generate_tokens(path, USERS)


def save(d: StateDir, stack: dict[str, Any]) -> None:
    write_private(d.stack_json, json.dumps(stack, indent=2) + "\n")
