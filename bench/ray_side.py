"""The Ray side of the benchmark, run with bench/.venv-ray/bin/python by bench/run.py.

Same workloads as zexec_side.py on a local Ray instance limited to 2 CPUs:
    python bench/ray_side.py --sizes '{...}' --workloads latency,pipelined,payload,lines
Prints one marked JSON line with the results (see common.emit).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    MIB,
    LineCounter,
    Sizes,
    emit,
    log,
    median_summary,
    payload,
    timed_round_trips,
    timed_sequential,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--workloads", default="latency,pipelined,payload,lines")
    args = ap.parse_args()
    sizes = Sizes.from_json(args.sizes)
    workloads = args.workloads.split(",")

    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    res: dict = {"ray_version": ray.__version__, "init_s": time.perf_counter() - t0}

    @ray.remote
    def noop():
        return None

    @ray.remote
    def ident(x):
        return x

    @ray.remote
    def printer(n):
        for i in range(n):
            print("ray-line", i)

    try:
        ray.get([noop.remote() for _ in range(4)])  # start the workers

        if "latency" in workloads:
            log(f"ray: {sizes.calls} sequential no-op calls")
            res["latency"] = timed_sequential(lambda: ray.get(noop.remote()), sizes.warmup,
                                              sizes.calls)

        if "pipelined" in workloads:
            n = sizes.pipelined
            log(f"ray: {n} pipelined calls (f.remote() x{n}, then ray.get)")
            ray.get([ident.remote(i) for i in range(min(500, n))])
            t0 = time.perf_counter()
            out = ray.get([ident.remote(i) for i in range(n)])
            elapsed = time.perf_counter() - t0
            assert out == list(range(n)), "pipelined results differ"
            res["pipelined"] = {"n": n, "elapsed_s": elapsed, "calls_per_s": n / elapsed}

        if "payload" in workloads:
            arr = payload(sizes.payload_mib)
            log(f"ray: {sizes.payload_mib} MiB round trip x{sizes.payload_reps}")
            ray.get(ident.remote(arr[:MIB]))
            # The argument goes through the object store.
            res["payload"] = timed_round_trips(lambda a: ray.get(ident.remote(a)), arr,
                                               sizes.payload_reps)

        if "lines" in workloads:
            n = sizes.lines
            log(f"ray: {n} printed lines x{sizes.lines_reps} (log_to_driver)")
            ray.get(printer.remote(1))
            time.sleep(1.0)  # let that line drain before counting
            call_times, all_times, complete = [], [], []
            for _ in range(sizes.lines_reps):
                counter = LineCounter("ray-line ")
                saved, sys.stdout = sys.stdout, counter  # Ray's log thread prints to sys.stdout
                try:
                    t0 = time.perf_counter()
                    ray.get(printer.remote(n))
                    call_times.append(time.perf_counter() - t0)
                    at_return = counter.matching
                    deadline = time.monotonic() + 10
                    while counter.matching < n and time.monotonic() < deadline:
                        time.sleep(0.001)
                    all_times.append(time.perf_counter() - t0)
                finally:
                    sys.stdout = saved
                complete.append({"at_return": at_return, "total": counter.matching})
            # The comparable figure: until every line is printed locally.
            res["lines"] = {"lines": n, "all_lines_at_return":
                            all(c["at_return"] == n for c in complete),
                            "all_lines_arrived": all(c["total"] == n for c in complete),
                            "counts": complete,
                            "call_return": median_summary(call_times),
                            **median_summary(all_times)}
    finally:
        ray.shutdown()
    emit(res)


if __name__ == "__main__":
    main()
