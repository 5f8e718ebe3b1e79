"""Process checks for tests, on top of the CLI's own ``/proc`` readers (one way to read
a process's state: :mod:`zexec.apps.cli.procs`)."""

from __future__ import annotations

from pathlib import Path

from zexec.apps.cli.procs import alive, parent_pid, start_time, stat_fields

__all__ = ["alive", "in_group", "live_children", "parent_pid", "start_time", "stat_fields"]


def live_children(ppid: int) -> set[int]:
    """The live (non-zombie) children of ``ppid``."""
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == ppid and alive(int(entry.name)):
            kids.add(int(entry.name))
    return kids


def in_group(pgid: int, inner_pid: int) -> bool:
    """Whether a live process of process group ``pgid`` has pid ``inner_pid`` as it sees
    itself: a sandboxed server (its own pid namespace) reports its pid, and its workers
    their parent's, as numbered inside the sandbox (the last ``NSpid`` of
    ``/proc/<pid>/status``); without a sandbox that is the pid itself."""
    for entry in Path("/proc").iterdir():
        fields = stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields is None or fields[0] in ("Z", "X") or int(fields[2]) != pgid:
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        ns = next((line.split()[1:] for line in status.splitlines()
                   if line.startswith("NSpid:")), [entry.name])
        if int(ns[-1]) == inner_pid:
            return True
    return False
