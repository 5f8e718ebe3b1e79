"""Background processes of ``zexec up``: start detached, recognise later, stop for good.

Each component is recorded as ``(pid, start)`` (see
:mod:`zexec.adapters.orchestrator_local.procs`, whose identity and group helpers are
re-exported here): a pid whose start time differs is not ours and is never signalled.

Every component runs in its own session (``start_new_session``), so its process group id
is its pid: one ``killpg`` reaches it and anything it forked, and Ctrl-C in the terminal
that ran ``zexec up`` never reaches the stack.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from zexec.adapters.orchestrator_local.procs import (  # noqa: F401  (re-exported)
    PROC,
    alive,
    live_groups,
    parent_pid,
    signal_group,
    spawn,
    start_time,
    stat_fields,
    stop_groups,
    wait_groups_gone,
)
from zexec.adapters.orchestrator_local.procs import tail as log_tail


def spawn_detached(
    cmd: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a new session with output appended to ``log``; it outlives us."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return spawn(cmd, env=env, log=out, cwd=cwd)


def ancestors(pid: int | None = None) -> set[int]:
    """``pid`` (default: this process) and its parents up to init."""
    pid = os.getpid() if pid is None else pid
    seen: set[int] = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        parent = parent_pid(pid)
        if parent is None:
            break
        pid = parent
    return seen


def processes_under(root: Path) -> list[int]:
    """Pids (other than ours) whose working directory or ``ZEXEC_SERVER_READY_FILE`` lies
    under ``root``: what the local orchestrator started there (it runs uv and the
    servers with ``cwd`` = its state directory). Linux only; elsewhere empty."""
    root = root.resolve()
    found: list[int] = []
    if not PROC.is_dir():
        return found
    mine = ancestors()  # never our own shell, even when it sits in ``root``
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            cwd = None
        hit = cwd is not None and (cwd == root or root in cwd.parents)
        if not hit:
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            prefix = b"ZEXEC_SERVER_READY_FILE=" + str(root).encode()
            hit = any(v.startswith(prefix) for v in environ)
        if hit and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` non-blank lines of a log file, as text ("" if missing)."""
    return "\n".join(log_tail(path, lines, max_bytes=64 * 1024)) if lines > 0 else ""
