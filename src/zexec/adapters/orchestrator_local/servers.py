"""The local orchestrator's record of one server in memory, the file-name key of a user,
and where that user's server log is (the one place that knows, for the CLI too)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from zexec.adapters.orchestrator_local import procs
from zexec.adapters.orchestrator_local.tenancy import Tenant
from zexec.core.model import EnvSpec

#: Suffix of a replacement's record and ready file while it starts beside the current one.
NEXT = ".next"


def file_key(user_id: str) -> str:
    """``user_id`` as a file-name component; a hash suffix keeps altered ids unique."""
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", user_id)[:64].lstrip(".") or "_"
    if safe != user_id:
        safe += "-" + hashlib.sha256(user_id.encode()).hexdigest()[:8]
    return safe


@dataclass(eq=False)
class Server:
    """One ``ensure``'s server. Replaced servers are stopped and dropped, never reused."""

    user_id: str
    key: str
    spec: EnvSpec
    interpreter: str
    phase: str
    since: float
    reason: str = ""
    log_tail: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | procs.Adopted | None = None
    tenant: Tenant | None = None
    stopped: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None
    #: A replacement built beside the current server (see :mod:`zexec.core.replacing`):
    #: promoted to current once ready, its own ready file and record meanwhile.
    beside: bool = False
    ready: Path | None = None  # the ready file its server writes
    cores: tuple[int, ...] = ()  # the cores it is pinned to (cpus asked for), else ()

    @property
    def record_key(self) -> str:
        return self.key + NEXT if self.beside else self.key


def server_log(state_dir: Path, user_id: str) -> Path:
    """The installer's and server's output for ``user_id`` under the orchestrator's
    ``state_dir``."""
    return state_dir / "logs" / f"{file_key(user_id)}.log"
