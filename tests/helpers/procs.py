"""Process checks for tests, on top of the CLI's own ``/proc`` readers (one way to read
a process's state: :mod:`zexec.apps.cli.procs`)."""

from __future__ import annotations

from pathlib import Path

from zexec.apps.cli.procs import alive, parent_pid, start_time, stat_fields

__all__ = ["alive", "cpu_seconds", "live_children", "memory", "parent_pid", "reset_peak",
           "start_time", "stat_fields"]
__all__ = ["alive", "in_group", "live_children", "parent_pid", "start_time", "stat_fields"]


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
