"""Child processes in their own process group, and stopping them without leftovers.

Every child (uv, the server) starts a new session, so one ``killpg`` reaches it and
everything it forked (the server's worker pool), and a signal aimed at the Deploy API's
own process group never reaches the users' servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO


def spawn(
    cmd: Sequence[str], *, env: Mapping[str, str], log: IO[bytes], cwd: str | Path
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` (an argument list: never a shell) with output appended to ``log``."""
    return subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env),
        cwd=str(cwd),
        start_new_session=True,
        close_fds=True,
    )


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM the process group, wait up to ``grace`` seconds for the leader, then
    SIGKILL whatever is left of the group. Returns the leader's exit status."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    # Not poll(): while another thread blocks in proc.wait() (the orchestrator's
    # watcher does), poll() cannot take the wait lock and always says "running";
    # wait(timeout) notices the other thread's reaping.
    if proc.returncode is None:
        _killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Also when the leader already exited: its workers may still be around.
    _killpg(pgid, signal.SIGKILL)
    code = proc.wait()
    wait_group_gone(pgid, timeout=max(grace, 5.0))
    return code


def wait_group_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process of group ``pgid`` exists (workers die a moment after the
    server); True when the group is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def reap_group(proc: subprocess.Popen[bytes]) -> None:
    """After the leader exited on its own: kill stragglers left in its group."""
    _killpg(proc.pid, signal.SIGKILL)


def describe_exit(code: int) -> str:
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
