"""Process checks for tests, on top of the CLI's own ``/proc`` readers (one way to read
a process's state: :mod:`zexec.apps.cli.procs`)."""

from __future__ import annotations

from pathlib import Path

from zexec.apps.cli.procs import alive, parent_pid, start_time, stat_fields

__all__ = ["alive", "cpu_seconds", "live_children", "memory", "parent_pid", "reset_peak",
           "start_time", "stat_fields"]


def live_children(ppid: int) -> set[int]:
    """The live (non-zombie) children of ``ppid``."""
    kids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and parent_pid(int(entry.name)) == ppid and alive(int(entry.name)):
            kids.add(int(entry.name))
    return kids


def memory(pid: int, field: str = "VmRSS") -> int:
    """``VmRSS`` (or ``VmHWM``, the peak) of ``pid`` in bytes, from /proc; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> None:
    """Reset ``VmHWM`` to the current RSS (Linux: ``5`` to ``clear_refs``)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` has used so far."""
    import os

    fields = stat_fields(pid) or []
    if len(fields) < 13:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
