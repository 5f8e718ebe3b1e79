"""CPU per call of each process on the user path, and calls/s one call per item.

    .venv/bin/python bench/percall.py [--calls 3000] [--workers 1] [--rounds 3]
    PYTHONPATH=/tmp/base/src .venv/bin/python bench/percall.py   # another tree (A/B)

``zexec up`` (this interpreter's zexec) in a temporary state directory, alice connected
with ``zexec.connect()`` twice (plain, as ``connect`` picks on loopback, and
``encrypt=True``). Per path and round: ``fn.map(range(calls), batch_size=1)`` (one call
per item) and sequential no-op calls; for each, the CPU time (user + system, from
``/proc``) the broker, the rest of the stack (the user's server and its workers) and
this client spent, divided by the calls. CPU per call hardly depends on what else runs
on the machine, unlike calls/s: on a shared machine it is the figure to compare.
Benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zexec
from zexec.apps.cli.procs import processes_under

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers.procs import cpu_seconds  # noqa: E402

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def ident(x):
    return x


def noop():
    return None


def cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def measure(label: str, fn, n: int, broker: int, state: Path) -> dict:
    stack = [p for p in processes_under(state) if p != broker]
    c0, b0, s0, t0 = time.process_time(), cpu_seconds(broker), cpu(stack), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    c1, b1, s1 = time.process_time(), cpu_seconds(broker), cpu(stack)
    return {"what": label, "calls": n, "calls_per_s": n / wall,
            "broker_us": (b1 - b0) / n * 1e6, "server_workers_us": (s1 - s0) / n * 1e6,
            "client_us": (c1 - c0) / n * 1e6}


def run_path(client, path: str, args, broker: int, state: Path) -> list[dict]:
    fn = client.remote(ident)
    list(fn.map(range(500), batch_size=1))  # warm
    lat: list[float] = []

    def pipelined() -> None:
        list(fn.map(range(args.calls), batch_size=1))

    def sequential() -> None:
        for _ in range(args.noop_calls):
            t = time.perf_counter()
            client.call(noop)
            lat.append(time.perf_counter() - t)

    rows = []
    for _ in range(args.rounds):
        rows.append({"path": path, **measure("map batch_size=1", pipelined, args.calls,
                                             broker, state)})
        lat.clear()
        row = measure("sequential no-op", sequential, args.noop_calls, broker, state)
        rows.append({"path": path, **row, "p50_ms": statistics.median(lat) * 1e3})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--noop-calls", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="zexec-percall."))
    cli = str(Path(sys.executable).with_name("zexec"))
    env = {**os.environ, "ZEXEC_DEPLOY_SERVER_WORKERS": str(args.workers)}
    subprocess.run([cli, "up", "--state-dir", str(state)], check=True, env=env,
                   stdout=subprocess.DEVNULL, timeout=300)
    rows = []
    try:
        info = json.loads((state / "stack.json").read_text())
        broker = info["components"]["broker"]["pid"]
        for encrypt in (None, True):
            conn = zexec.connect(info["ep_api_url"], info["tokens"]["alice"], encrypt=encrypt)
            try:
                conn.environment([f"python=={PYTHON}"], progress=False)
                client = conn.client
                path = "encrypted" if client.encrypted else "plain"
                rows += run_path(client, path, args, broker, state)
            finally:
                conn.close()
    finally:
        subprocess.run([cli, "down", "--state-dir", str(state)], stdout=subprocess.DEVNULL,
                       timeout=120)
        shutil.rmtree(state, ignore_errors=True)
    print(f"zexec from {Path(zexec.__file__).parent}, {args.workers} worker(s), "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| path | what | calls/s | p50 ms | broker µs/call | server+workers µs/call "
          "| client µs/call |\n| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        p50 = f"{r['p50_ms']:.3f}" if "p50_ms" in r else "-"
        print(f"| {r['path']} | {r['what']} | {r['calls_per_s']:.0f} | {p50} | "
              f"{r['broker_us']:.0f} | {r['server_workers_us']:.0f} | {r['client_us']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
