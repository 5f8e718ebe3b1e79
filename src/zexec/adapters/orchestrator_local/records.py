"""What the local orchestrator started, recorded durably, so a restarted Deploy API can
find its servers again (re-adopt them) or stop those it cannot trust.

One JSON file per user, ``<state>/servers/<user key>.json`` (directory 0700, files 0600),
written when a child process starts (a build or the server) and removed when it is
stopped or has exited. Each write goes to a temporary file that is synced and renamed
over the old one: a crash leaves the old record or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zexec.core.model import EnvSpec
from zexec.core.resources import resources_from_dict

log = logging.getLogger("zexec.orchestrator")


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON, mode 0600 from the first byte, atomically
    and durably (fsync before the rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Records:
    """The records under ``root`` (created 0700 unless only read: ``create=False``)."""

    def __init__(self, root: Path, create: bool = True) -> None:
        self.root = root
        if create:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(root, 0o700)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def write(self, key: str, record: dict[str, Any]) -> None:
        write_json_atomic(self.path(key), record)

    def remove(self, key: str, pid: int) -> None:
        """Drop the record of ``key`` if it is still the one of process ``pid`` (a newer
        server of the same user has its own record by then)."""
        path = self.path(key)
        try:
            current = json.loads(path.read_text(encoding="utf-8")).get("pid")
        except (OSError, ValueError, AttributeError):
            current = pid  # unreadable: of no use to anyone
        if current == pid:
            path.unlink(missing_ok=True)

    def load_all(self, drop_bad: bool = False) -> dict[str, dict[str, Any]]:
        """``{user key: record}``; a record that cannot be read is reported and, with
        ``drop_bad``, removed (its process, if any, is then found by ``zexec down``'s
        sweep)."""
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(self.root.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
                    raise ValueError("not a server record")
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable server record %s: %s", path, exc)
                if drop_bad:
                    path.unlink(missing_ok=True)
                continue
            out[path.stem] = record
        return out


def record_spec(r: dict[str, Any]) -> EnvSpec:
    """The environment a record names (KeyError/TypeError if it names none)."""
    env = r["env"]
    return EnvSpec(str(env["python"]), tuple(env["requirements"]), str(env["digest"]),
                   resources_from_dict(env.get("resources")))


def distrust(
    r: dict[str, Any], *, isolation: str, broker_url: str, secret: str,
    env_complete: Callable[[EnvSpec, str], bool],
    uid_of: Callable[[str], tuple[int, int]] | None,
) -> str | None:
    """Why a recorded process that still runs (and is the one recorded: its start time
    matched) must be stopped rather than adopted by an orchestrator configured with
    ``isolation``, ``broker_url``, ``secret`` (the digest of the broker secret); None
    when it can be adopted. ``env_complete(spec, interpreter)`` says whether its
    environment is intact, ``uid_of(user id)`` which uid its user has now."""
    if r.get("role") != "server":
        return "an environment build cut short"
    if r.get("isolation") != isolation:
        return f"started with isolation {r.get('isolation')}, now {isolation}"
    if r.get("broker_url") != broker_url or r.get("secret") != secret:
        return "started for another broker address or secret"
    if not Path(str(r.get("ready_file", ""))).is_file():
        return "it never registered with the broker"
    try:
        spec = record_spec(r)
    except (KeyError, TypeError, ValueError):
        return "its record names no environment"
    if not env_complete(spec, str(r.get("interpreter", ""))):
        return "its environment is gone or incomplete"
    if uid_of is not None and list(uid_of(str(r.get("user_id")))) != [r.get("uid"), r.get("gid")]:
        return "it runs as another uid than its user's"
    return None
