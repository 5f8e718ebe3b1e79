"""Helpers shared by every side of the benchmark (stdlib only: imported by the zexec,
Ray and legacy sides, each running in its own virtual environment)."""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass

MIB = 1024 * 1024
RESULT_MARKER = "@@BENCH_JSON@@ "


@dataclass
class Sizes:
    """How much work each workload does (``--quick`` shrinks everything)."""

    warmup: int = 200
    calls: int = 2000
    pipelined: int = 5000
    payload_mib: int = 100
    payload_reps: int = 5
    lines: int = 1000
    lines_reps: int = 5

    @classmethod
    def quick(cls) -> Sizes:
        return cls(warmup=20, calls=200, pipelined=500, payload_mib=20, payload_reps=2,
                   lines=1000, lines_reps=2)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Sizes:
        return cls(**json.loads(text))


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def latency_stats(samples_s: list[float], total_s: float) -> dict:
    """p50/p99/mean in milliseconds and calls/s of a run of sequential calls."""
    s = sorted(samples_s)
    return {
        "n": len(s),
        "p50_ms": percentile(s, 50) * 1e3,
        "p99_ms": percentile(s, 99) * 1e3,
        "mean_ms": statistics.fmean(s) * 1e3,
        "max_ms": s[-1] * 1e3,
        "calls_per_s": len(s) / total_s,
    }


def timed_sequential(call, warmup: int, n: int) -> dict:
    """``call()`` ``warmup`` times untimed, then ``n`` times, each timed."""
    for _ in range(warmup):
        call()
    samples = []
    clock = time.perf_counter
    t_start = clock()
    for _ in range(n):
        t0 = clock()
        call()
        samples.append(clock() - t0)
    return latency_stats(samples, clock() - t_start)


def payload(mib: int):
    """A ``mib`` MiB uint8 numpy array of random bytes (the same every run)."""
    import numpy as np

    return np.frombuffer(np.random.default_rng(0).bytes(mib * MIB), dtype=np.uint8)


def timed_round_trips(round_trip, arr, reps: int) -> dict:
    """Time ``round_trip(arr)`` ``reps`` times; every result must equal ``arr``."""
    import numpy as np

    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        back = round_trip(arr)
        times.append(time.perf_counter() - t0)
        assert back.shape == arr.shape and np.array_equal(back, arr), "payload differs"
        del back  # the next round trip must not find this one's copy still alive
    return {"bytes": arr.nbytes, "verified": True, **median_summary(times)}


def median_summary(samples_s: list[float]) -> dict:
    return {"n": len(samples_s), "median_s": statistics.median(samples_s),
            "min_s": min(samples_s), "max_s": max(samples_s),
            "samples_s": samples_s}


class LineCounter:
    """A stand-in for sys.stdout that counts complete lines (and keeps nothing else)."""

    def __init__(self, marker: str = "") -> None:
        self.marker = marker
        self.lines = 0
        self.matching = 0
        self.last_index = -1
        self.in_order = True
        self._partial = ""

    def write(self, text: str) -> int:
        data = self._partial + text
        *complete, self._partial = data.split("\n")
        for line in complete:
            self.lines += 1
            if self.marker and self.marker in line:
                self.matching += 1
                try:
                    idx = int(line.rsplit(self.marker, 1)[1].split()[0])
                except (ValueError, IndexError):
                    continue
                if idx != self.last_index + 1:
                    self.in_order = False
                self.last_index = idx
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def emit(result: dict) -> None:
    """Hand the side's results to bench/run.py: one marked JSON line on real stdout."""
    sys.__stdout__.write(RESULT_MARKER + json.dumps(result) + "\n")
    sys.__stdout__.flush()


def log(msg: str) -> None:
    sys.__stderr__.write(f"  {msg}\n")
    sys.__stderr__.flush()
