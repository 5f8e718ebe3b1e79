"""The zexec side of the benchmark: the SDK against a running broker + server.

Run by bench/run.py with the project's interpreter, on the harness (a bare Client to
a broker URL) or on the user path (``zexec.connect`` to a ``zexec up`` stack, which asks
for the user's server itself):
    python bench/zexec_side.py --broker tcp://127.0.0.1:PORT --token TOKEN \
        --sizes '{...}' --workloads latency,pipelined,payload,lines
    python bench/zexec_side.py --ep-url http://127.0.0.1:PORT --token TOKEN [--encrypt] ...
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


def noop():
    return None


def ident(x):
    return x


def printer(n):
    for i in range(n):
        print("zexec-line", i)


def run(client, sizes: Sizes, workloads: list[str], serializer: str) -> dict:

    res: dict = {"serializer": serializer}
    client.call(noop)  # connect, warm the worker pool's imports

    if "latency" in workloads:
        log(f"zexec: {sizes.calls} sequential no-op calls")
        res["latency"] = timed_sequential(lambda: client.call(noop), sizes.warmup, sizes.calls)

    if "pipelined" in workloads:
        n = sizes.pipelined
        fn = client.remote(ident)
        # The default .map (batch_size="auto": items batched once their pace is known),
        # and one call per item (batch_size=1), the per-call cost of the whole path.
        for key, batch_size in (("pipelined", "auto"), ("pipelined_single", 1)):
            log(f"zexec: {n} pipelined calls via .map(batch_size={batch_size!r})")
            list(fn.map(range(min(500, n)), batch_size=batch_size))  # warm-up
            t0 = time.perf_counter()
            out = list(fn.map(range(n), batch_size=batch_size))
            elapsed = time.perf_counter() - t0
            assert out == list(range(n)), "pipelined results differ"
            res[key] = {"n": n, "elapsed_s": elapsed, "calls_per_s": n / elapsed,
                        "batch_size": batch_size}

    if "payload" in workloads or "memory" in workloads:
        arr = payload(sizes.payload_mib)
        reps = sizes.payload_reps if "payload" in workloads else 2
        log(f"zexec: {sizes.payload_mib} MiB round trip x{reps}")
        if "payload" in workloads:
            client.call(ident, arr[: MIB])  # warm-up with a small array
        res["payload"] = timed_round_trips(lambda a: client.call(ident, a), arr, reps)

    if "lines" in workloads:
        n = sizes.lines
        log(f"zexec: {n} printed lines x{sizes.lines_reps}")
        client.call(printer, 10)
        times, complete = [], []
        for _ in range(sizes.lines_reps):
            counter = LineCounter("zexec-line ")
            with contextlib.redirect_stdout(counter):
                t0 = time.perf_counter()
                client.call(printer, n)
                times.append(time.perf_counter() - t0)
            complete.append(counter.matching == n and counter.in_order)
        res["lines"] = {"lines": n, "all_lines_at_return": all(complete), **median_summary(times)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", help="harness: a broker URL to use with a bare zexec.Client")
    ap.add_argument("--ep-url", help="user path: zexec.connect(EP_URL, token), as the README")
    ap.add_argument("--encrypt", action="store_true", help="user path: connect(encrypt=True)")
    ap.add_argument("--token", required=True)
    ap.add_argument("--sizes", required=True)
    ap.add_argument("--workloads", default="latency,pipelined,payload,lines")
    ap.add_argument("--serializer", default="cloudpickle")
    args = ap.parse_args()

    import zexec

    conn = None
    if args.ep_url:
        conn = zexec.connect(args.ep_url, args.token, encrypt=args.encrypt or None,
                             serializer=args.serializer)
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        conn.environment([f"python=={python}", "numpy"], progress=False)
        client = conn.client
        log(f"zexec user path: {conn!r}")
    else:
        client = zexec.Client(args.broker, args.token, serializer=args.serializer)
    try:
        res = run(client, Sizes.from_json(args.sizes), args.workloads.split(","),
                  args.serializer)
        res["broker"] = client.broker
        res["encrypted"] = client.encrypted
    finally:
        (conn or client).close()
    emit(res)


if __name__ == "__main__":
    main()
