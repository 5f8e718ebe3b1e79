"""The deployed-protocol reference: the released ``scidx-rexec==0.1.0`` client (import
name ``rexec``), unmodified, against the zexec broker. It opens a new connection per call
and serializes with dill in-band; it has no pipelining.

Run by bench/run.py with bench/.venv-legacy/bin/python:
    python bench/legacy_side.py --host 127.0.0.1 --port PORT --token TOKEN --sizes '{...}'
Prints one marked JSON line with the results (see common.emit).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    LineCounter,
    Sizes,
    emit,
    log,
    median_summary,
    payload,
    timed_round_trips,
    timed_sequential,
)


def noop():
    return None


def ident(x):
    return x


def printer(n):
    for i in range(n):
        print("legacy-line", i)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--workloads", default="latency,payload,lines")
    args = ap.parse_args()
    sizes = Sizes.from_json(args.sizes)
    workloads = args.workloads.split(",")

    from rexec.client_api import remote_func

    remote_func.set_remote_addr(args.host)
    remote_func.set_remote_port(args.port)
    remote_func.set_exec_token(args.token)
    r_noop, r_ident, r_printer = remote_func(noop), remote_func(ident), remote_func(printer)

    res: dict = {"client": "scidx-rexec==0.1.0"}
    assert remote_func(lambda a, b: a + b)(5, 2) == 7

    if "latency" in workloads:
        log(f"legacy: {sizes.calls} sequential no-op calls (new connection each)")
        res["latency"] = timed_sequential(r_noop, sizes.warmup, sizes.calls)

    if "payload" in workloads or "memory" in workloads:
        arr = payload(sizes.payload_mib)
        reps = sizes.payload_reps if "payload" in workloads else 2
        log(f"legacy: {sizes.payload_mib} MiB round trip x{reps}")
        res["payload"] = timed_round_trips(r_ident, arr, reps)

    if "lines" in workloads:
        n = sizes.lines
        log(f"legacy: {n} printed lines x{sizes.lines_reps}")
        times, complete = [], []
        for _ in range(sizes.lines_reps):
            counter = LineCounter("legacy-line ")
            with contextlib.redirect_stdout(counter):
                t0 = time.perf_counter()
                r_printer(n)
                times.append(time.perf_counter() - t0)
            complete.append(counter.matching == n and counter.in_order)
        res["lines"] = {"lines": n, "all_lines_at_return": all(complete), **median_summary(times)}
    emit(res)


if __name__ == "__main__":
    main()
