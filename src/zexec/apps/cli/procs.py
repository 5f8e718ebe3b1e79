"""Background processes of ``zexec up``: start detached, recognise later, stop for good.

A pid alone is not an identity: after a reboot or a long time the number names some
other process. Each component is recorded as ``(pid, start)`` where ``start`` is the
kernel's start time of the process (``/proc/<pid>/stat`` field 22); a pid whose start
time differs is not ours and is never signalled. Without ``/proc`` (macOS) ``start`` is
None and the pid is trusted.

Every component runs in its own session (``start_new_session``), so its process group id
is its pid: one ``killpg`` reaches it and anything it forked, and Ctrl-C in the terminal
that ran ``zexec up`` never reaches the stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from zexec.adapters.orchestrator_local.procs import spawn

PROC = Path("/proc")


def stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (state, ppid, ...), None if there is no such
    process (or no ``/proc``). The process may vanish between open and read: that is
    "no such process" too."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:  # FileNotFoundError, or ProcessLookupError mid-read
        return None
    # The command name (field 2) may contain spaces and parentheses: split after it.
    return stat[stat.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The kernel start time of ``pid`` (clock ticks since boot), None if unknown."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[19])  # field 22 overall


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid``, None if there is no such process."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[1])


def alive(pid: int, start: int | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if ``start`` is given, is the same
    process that was recorded."""
    if pid <= 0:
        return False
    if PROC.is_dir():
        fields = stat_fields(pid)
        if fields is None or fields[0] in ("Z", "X"):  # a zombie has nothing left to stop
            return False
        return start is None or int(fields[19]) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spawn_detached(
    cmd: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a new session with output appended to ``log``; it outlives us."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return spawn(cmd, env=env, log=out, cwd=cwd)


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (and to ``pid`` itself, in case
    it left its group); vanished processes are fine."""
    for send in (os.killpg, os.kill):
        try:
            send(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def live_groups(pgids: Iterable[int]) -> set[int]:
    """Which of the process groups ``pgids`` still have a live (non-zombie) member.
    Without ``/proc``: those whose leader is alive."""
    wanted = set(pgids)
    if not PROC.is_dir():
        return {g for g in wanted if alive(g)}
    found: set[int] = set()
    for entry in PROC.iterdir():
        rest = stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if rest is None:
            continue
        if rest[0] not in ("Z", "X") and int(rest[2]) in wanted:  # rest[2]: field 5, pgrp
            found.add(int(rest[2]))
    return found


def wait_groups_gone(pgids: Iterable[int], timeout: float) -> set[int]:
    """Wait up to ``timeout`` seconds for every member of the groups to exit; return the
    groups that still have members."""
    left = set(pgids)
    deadline = time.monotonic() + timeout
    while True:
        left = live_groups(left)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def stop_groups(procs: Sequence[tuple[int, int | None]], grace: float) -> list[int]:
    """SIGTERM the process group of each live ``(pid, start)``, wait up to ``grace``
    seconds for every member of those groups (not just the leader: a server's workers
    die a moment after it), then SIGKILL the groups with survivors and wait for them.
    Returns the groups that needed SIGKILL. Our own group is never signalled."""
    groups: set[int] = set()
    for pid, start in procs:
        if alive(pid, start):
            try:
                pgid = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if pgid != os.getpgrp():
                groups.add(pgid)
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    stubborn = wait_groups_gone(groups, grace)
    for pgid in stubborn:
        signal_group(pgid, signal.SIGKILL)
    # SIGKILL cannot be ignored; the wait only lets the kernel finish the job.
    wait_groups_gone(stubborn, 5.0)
    return sorted(stubborn)


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
    """The last ``lines`` lines of a text file ("" if missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""
