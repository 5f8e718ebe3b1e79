"""Which uid runs each user's server: an existing account named by a setting, or one
allocated for the user from a range, like systemd's ``DynamicUser``, and kept.

Allocations live in ``<state>/uids.json`` (``{user id: uid}``), changed under an
``flock`` and replaced atomically, so a user keeps the same uid across restarts (and the
files in their working directory stay theirs). A uid is never handed out when an account
of this machine has it. The group of an allocated uid is the number of the uid (no group
of that number needs to exist); supplementary groups are always dropped.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import pwd
import threading
from pathlib import Path

from zexec.adapters.orchestrator_local.records import write_json_atomic
from zexec.core.errors import ConfigurationError, OrchestratorError

#: systemd's range for dynamic users: no distribution creates accounts there.
DEFAULT_RANGE = "61184-65519"


def parse_range(text: str) -> tuple[int, int]:
    """``"61184-65519"`` -> (61184, 65519); ConfigurationError for anything else, a
    range that includes uid 0 or is empty."""
    first, sep, last = text.strip().partition("-")
    try:
        lo, hi = int(first), int(last)
    except ValueError:
        raise ConfigurationError(f"uid range {text!r}: expected FIRST-LAST, e.g. {DEFAULT_RANGE}") \
            from None
    if not sep or lo < 1 or hi < lo or hi > 2**31 - 2:
        raise ConfigurationError(f"uid range {text!r}: need 1 <= FIRST <= LAST < 2^31-1")
    return lo, hi


def parse_accounts(text: str) -> dict[str, tuple[int, int]]:
    """``"<user id>=<account or uid>,..."`` -> ``{user id: (uid, gid)}``. Accounts are
    looked up now (a missing one is a configuration error); a bare number is its own
    group. Root is refused."""
    out: dict[str, tuple[int, int]] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        user, sep, account = (s.strip() for s in item.rpartition("="))
        if not sep or not user or not account:
            raise ConfigurationError(f"uid map entry {item!r}: expected <user id>=<account>")
        try:
            if account.isdigit():
                ids = (int(account), int(account))
            else:
                pw = pwd.getpwnam(account)
                ids = (pw.pw_uid, pw.pw_gid)
        except KeyError:
            raise ConfigurationError(f"uid map entry {item!r}: no account {account!r} here") \
                from None
        if 0 in ids:
            raise ConfigurationError(f"uid map entry {item!r}: a server never runs as root")
        out[user] = ids
    return out


def _taken_by_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


class UidMap:
    """``uid_for(user_id)`` -> ``(uid, gid)``, stable for a user."""

    def __init__(self, path: Path, uid_range: str = DEFAULT_RANGE, accounts: str = "") -> None:
        self.path = path
        self.first, self.last = parse_range(uid_range)
        self.accounts = parse_accounts(accounts)
        self._lock = threading.Lock()

    def uid_for(self, user_id: str) -> tuple[int, int]:
        if user_id in self.accounts:
            return self.accounts[user_id]
        with self._lock, self._file_lock():
            table = self._load()
            uid = table.get(user_id)
            if uid is None:
                uid = self._allocate(user_id, set(table.values()))
                table[user_id] = uid
                self._save(table)
            return uid, uid

    def _allocate(self, user_id: str, used: set[int]) -> int:
        """From a point given by the user id (so two stacks tend to agree), the first
        uid neither allocated nor an account's."""
        size = self.last - self.first + 1
        start = int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big") % size
        mapped = {ids[0] for ids in self.accounts.values()}
        for i in range(size):
            uid = self.first + (start + i) % size
            if uid not in used and uid not in mapped and not _taken_by_account(uid):
                return uid
        raise OrchestratorError(
            f"no free uid left in {self.first}-{self.last} for user {user_id!r}; "
            "widen ZEXEC_DEPLOY_UID_RANGE"
        )

    def _file_lock(self):
        return _Flock(self.path.with_name(self.path.name + ".lock"))

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Guessing would hand one user's files to another: stop instead.
            raise OrchestratorError(f"cannot read the uid table {self.path}: {exc}") from None
        return {str(k): int(v) for k, v in data.items()}

    def _save(self, table: dict[str, int]) -> None:
        write_json_atomic(self.path, table)


class _Flock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.f = open(self.path, "a+b")  # noqa: SIM115 (closed in __exit__)
        fcntl.flock(self.f, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()
