"""Process checks for tests, on top of the CLI's own ``/proc`` readers (one way to read
a process's state: :mod:`zexec.apps.cli.procs`)."""

from __future__ import annotations

from pathlib import Path

from zexec.apps.cli.procs import alive, parent_pid, start_time, stat_fields

__all__ = ["alive", "live_children", "parent_pid", "start_time", "stat_fields"]


def live_children(ppid: int) -> set[int]:
    """The live (non-zombie) children of ``ppid``."""
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == ppid and alive(int(entry.name)):
            kids.add(int(entry.name))
    return kids
