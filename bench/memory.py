"""Peak memory of the broker and of the server process tree, read from /proc (Linux).

Two views, both reported:

- the kernel's high-water mark (``VmHWM``) of each process, reset just before the
  workload by writing ``5`` to ``/proc/<pid>/clear_refs`` (needs permission over the
  process: ours, or root). For the server tree the per-process peaks are added up, an
  upper bound of the tree's peak (the processes may peak at different moments);
- a sampler thread polling ``/proc/<pid>/statm`` every couple of milliseconds, which
  sees the sum across the tree at one instant but can miss a short spike.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def rss(pid: int) -> int:
    """Resident set size in bytes (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_hwm(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakSampler:
    """Track peak RSS of the broker, the server and the server's children (workers)."""

    def __init__(self, broker_pid: int, server_pid: int, interval: float = 0.002) -> None:
        self.broker_pid = broker_pid
        self.server_pid = server_pid
        self.interval = interval
        self.baseline = self._snapshot()
        self.peak = dict.fromkeys(self.baseline, 0)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)
        self.hwm_reset = False
        self.hwm: dict[str, int] = {}

    def _snapshot(self) -> dict[str, int]:
        b = rss(self.broker_pid)
        s = rss(self.server_pid)
        w = sum(rss(c) for c in children(self.server_pid))
        return {"broker": b, "server": s, "workers": w, "server_tree": s + w}

    def _run(self) -> None:
        while not self._stop.is_set():
            snap = self._snapshot()
            self.samples += 1
            for k, v in snap.items():
                if v > self.peak[k]:
                    self.peak[k] = v
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        pids = [self.broker_pid, self.server_pid, *children(self.server_pid)]
        self.hwm_reset = all(reset_hwm(p) for p in pids)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        workers = children(self.server_pid)
        per_worker = [status_kib(c, "VmHWM") for c in workers]
        b = status_kib(self.broker_pid, "VmHWM")
        s = status_kib(self.server_pid, "VmHWM")
        self.hwm = {"broker": b, "server": s, "workers": sum(per_worker),
                    "server_tree": s + sum(per_worker), "per_worker": per_worker}

    def report(self, payload_bytes: int) -> dict:
        """Bytes and multiples of the payload. ``peak`` = max of the two views per
        process (the tree's HWM sum is the conservative figure the targets use)."""
        out: dict = {"payload_bytes": payload_bytes, "hwm_reset": self.hwm_reset,
                     "samples": self.samples, "processes": {}}
        for k in ("broker", "server", "workers", "server_tree"):
            peak = max(self.peak[k], self.hwm.get(k, 0))
            out["processes"][k] = {
                "baseline_bytes": self.baseline[k],
                "polled_peak_bytes": self.peak[k],
                "hwm_bytes": self.hwm.get(k, 0),
                "peak_bytes": peak,
                "peak_x_payload": peak / payload_bytes,
                "growth_x_payload": (peak - self.baseline[k]) / payload_bytes,
            }
        return out


def settle(broker_pid: int, server_pid: int, timeout: float = 10.0) -> bool:
    """Wait until the broker's and the server tree's RSS stop moving (workers started and
    imported), so the idle baseline means something. False if it never settled."""
    def total() -> tuple[int, int]:
        kids = children(server_pid)
        return len(kids), rss(broker_pid) + rss(server_pid) + sum(rss(c) for c in kids)

    deadline = time.monotonic() + timeout
    last, stable = total(), 0
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = total()
        stable = stable + 1 if now[0] == last[0] and abs(now[1] - last[1]) < 512 * 1024 else 0
        if stable >= 5:
            return True
        last = now
    return False
