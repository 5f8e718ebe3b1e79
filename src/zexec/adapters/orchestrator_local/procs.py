"""Child processes in their own process group, recognising them later, and stopping them
without leftovers.

Every child (uv, the server) starts a new session, so one ``killpg`` reaches it and
everything it forked (the server's worker pool), and a signal aimed at the Deploy API's
own process group never reaches the users' servers.

A pid alone is not an identity: after a restart or a long time the number names some
other process. A process is recorded as ``(pid, start)`` where ``start`` is the kernel's
start time of the process (``/proc/<pid>/stat`` field 22); a pid whose start time differs
is not ours and is never signalled. Without ``/proc`` (macOS) ``start`` is None and the
pid is trusted.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

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


def spawn(
    cmd: Sequence[str], *, env: Mapping[str, str], log: IO[bytes], cwd: str | Path,
    pass_fds: Sequence[int] = (), umask: int = -1,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` (an argument list: never a shell) with output appended to ``log``;
    ``pass_fds`` stay open in it (a pipe carrying a secret), ``umask`` (if >= 0) is its
    file creation mask."""
    return subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env),
        cwd=str(cwd),
        start_new_session=True,
        close_fds=True,
        pass_fds=tuple(pass_fds),
        umask=umask,
    )


#: ``returncode`` of an :class:`Adopted` process once it is gone: not our child, so its
#: exit status is unknown.
UNKNOWN_EXIT = -(2**16)


class Adopted:
    """A process an earlier incarnation of this program started (a server the Deploy
    API finds again after a restart), with the part of ``Popen``'s interface the
    orchestrator uses: ``pid``, ``returncode``, ``poll()``, ``wait(timeout)``. Its end
    is seen through a pidfd; its exit status stays unknown (:data:`UNKNOWN_EXIT`)."""

    def __init__(self, pid: int, start: int | None) -> None:
        """ProcessLookupError unless ``pid`` runs and started at ``start``."""
        self.pid = pid
        self.returncode: int | None = None
        self._fd = os.pidfd_open(pid)  # first: it pins this process, whatever comes
        if not alive(pid, start):  # then: is it the one recorded, not a reused pid?
            os.close(self._fd)
            self._fd = -1
            raise ProcessLookupError(pid)

    def poll(self) -> int | None:
        return self.wait(0) if self.returncode is None and self._gone(0) else self.returncode

    def _gone(self, timeout: float | None) -> bool:
        return bool(select.select([self._fd], [], [], timeout)[0])

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not self._gone(timeout):
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            self.returncode = UNKNOWN_EXIT
        return self.returncode

    def __del__(self) -> None:
        # Not closed in wait(): another thread may be in select() on it.
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: subprocess.Popen[bytes] | Adopted, grace: float) -> int:
    """SIGTERM the process group, wait up to ``grace`` seconds for the leader, then
    SIGKILL whatever is left of the group. Returns the leader's exit status."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    # Not poll(): while another thread blocks in proc.wait() (the orchestrator's
    # watcher does), poll() cannot take the wait lock and always says "running";
    # wait(timeout) notices the other thread's reaping.
    if proc.returncode is None:
        _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # A sandboxed server's leader (bubblewrap) exits at once; the server itself, in
        # the same group, gets the rest of the grace to drain and say goodbye.
        wait_group_gone(pgid, max(0.0, deadline - time.monotonic()))
    # Also when the leader already exited: its workers may still be around.
    _killpg(pgid, signal.SIGKILL)
    code = proc.wait()
    wait_group_gone(pgid, timeout=max(grace, 5.0))
    return code


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no live process of group ``pgid`` is left (workers die a moment after
    the server; a zombie whose parent is gone does not count); True when the group is
    gone."""
    return not wait_groups_gone([pgid], timeout)


def reap_group(proc: subprocess.Popen[bytes] | Adopted) -> None:
    """After the leader exited on its own: kill stragglers left in its group."""
    _killpg(proc.pid, signal.SIGKILL)


def describe_exit(code: int) -> str:
    if code == UNKNOWN_EXIT:
        return "exited (its status is unknown: it was adopted after a restart)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def tail(path: Path, lines: int = 20, max_bytes: int = 16384) -> tuple[str, ...]:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ()
    text = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and text:
        text = text[1:]  # first line is probably cut in the middle
    return tuple(line for line in text if line.strip())[-lines:]
