"""A memory-limited cgroup for tests of the kernel's OOM killer (cgroup v1 or v2),
made under this process's own memory cgroup and removed afterwards."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from zexec.apps.server.crashlog import cgroup_mounts


def _own(controller_line: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == controller_line or controller_line in controllers.split(","):
            return path.lstrip("/")
    raise LookupError(controller_line)


@contextlib.contextmanager
def memory_limited(limit: int) -> Iterator[Path | None]:
    """Yield the ``cgroup.procs`` file of a new cgroup whose memory is limited to
    ``limit`` bytes (a process written there, and its children, live under the limit),
    or None when this machine does not let us make one."""
    mounts = cgroup_mounts()
    made: Path | None = None
    procs: Path | None = None
    try:
        if "memory" in mounts:  # v1
            made = Path(mounts["memory"], _own("memory"), f"zexec-test-{os.getpid()}")
            made.mkdir()
            (made / "memory.limit_in_bytes").write_text(str(limit))
            procs = made / "cgroup.procs"
        elif "cgroup2" in mounts:
            parent = Path(mounts["cgroup2"], _own(""))
            if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
                raise OSError("the memory controller is not delegated here")
            made = parent / f"zexec-test-{os.getpid()}"
            made.mkdir()
            (made / "memory.max").write_text(str(limit))
            (made / "memory.swap.max").write_text("0")
            procs = made / "cgroup.procs"
    except (OSError, LookupError):
        procs = None
    try:
        yield procs
    finally:
        if made is not None and made.exists():
            for _ in range(100):  # its processes may take a moment to be gone
                try:
                    made.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)
