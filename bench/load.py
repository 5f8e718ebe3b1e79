"""Many connections at once: latency and loss at a fixed open-loop rate, and throughput
at saturation, on the path users take (a ``zexec up`` stack on this machine).

    .venv/bin/python bench/load.py                               # 1, 100, 1000 connections
    .venv/bin/python bench/load.py --connections 1,1000,5000 --rate 1000,2000
    .venv/bin/python bench/load.py --saturate --connections 1,100,1000

It starts ``zexec up`` (this checkout's) in a temporary state directory, gives its two
users (alice and bob) a server each with ``zexec.connect(...).environment()`` exactly as
the README does, and builds one no-op call per user with that connection's own client
(so the frames are what the SDK sends). The load comes from ``--procs`` generator
processes, each holding its share of the connections as raw DEALER sockets on the
broker's client port (what ``zexec.connect`` uses on loopback), half of them alice's, half
bob's, driven by asyncio:

* **open loop** (default): calls are sent at ``--rate`` calls/s in total, on a fixed
  schedule, round-robin over the connections. Latency is measured from the *scheduled*
  send time, so a generator that falls behind shows up as latency, not as a lower rate
  (no coordinated omission).
* **saturation** (``--saturate``): every connection keeps ``--window`` calls in flight;
  the throughput is what the stack completes.

A call is lost when no final event (return, error or cancelled) arrived ``--grace``
seconds after the run. Errors are final events of kind ``error`` (e.g. ``BUSY``).

Per row: calls/s achieved, p50/p99/max latency, lost and errors, the broker's CPU time
per call (from ``/proc``), and each generator's CPU share: a generator near 100% of a
core is the bottleneck, and the row says so (add ``--procs``). All processes share this
machine's cores, so the generators' CPU is part of every figure. Writes
``bench/results/load-<stamp>.json``. Not a test: asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402
from common import percentile  # noqa: E402

import zexec  # noqa: E402
from tests.helpers.procs import cpu_seconds  # noqa: E402
from zexec.core import protocol as p  # noqa: E402

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def noop():
    return None


# --------------------------------------------------------------------------- generator


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _generate(job: dict) -> dict:
    ctx = zmq.asyncio.Context()
    ctx.setsockopt(zmq.LINGER, 0)
    ctx.set(zmq.MAX_SOCKETS, job["connections"] + 64)
    socks, templates = [], []
    for i in range(job["connections"]):
        s = ctx.socket(zmq.DEALER)
        s.connect(job["broker"])
        socks.append(s)
        templates.append(job["calls"][i % len(job["calls"])])
    sent: dict[bytes, float] = {}
    lat: list[float] = []
    errors: dict[str, int] = {}
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    window = job["window"]
    slots = {i: asyncio.Semaphore(window) for i in range(len(socks))} if job["saturate"] else {}

    def frames(i: int) -> tuple[bytes, list]:
        call_id = os.urandom(p.CALL_ID_SIZE)
        f = list(templates[i])
        f[4] = call_id  # [b"", MAGIC, CALL, token, call_id, header, fn, *args]
        return call_id, f

    async def receive(i: int, s: zmq.asyncio.Socket) -> None:
        while True:
            msg = await s.recv_multipart(copy=False)
            ev = p.parse_client_bound(msg[1:])
            if isinstance(ev, dict) or ev.kind not in p.FINAL_EVENTS:
                continue
            t0 = sent.pop(ev.call_id, None)
            if t0 is None:
                continue
            lat.append(loop.time() - t0)
            if ev.kind != p.EV_RETURN:
                code = str(ev.header.get("code") or ev.kind)
                errors[code] = errors.get(code, 0) + 1
            if slots:
                slots[i].release()

    async def open_loop() -> None:
        rate, n, t0 = job["rate"], job["total"], loop.time() + 0.05
        for k in range(n):
            due = t0 + k / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            i = k % len(socks)
            call_id, f = frames(i)
            sent[call_id] = due
            await socks[i].send_multipart(f, copy=False)

    async def closed_loop(i: int) -> None:
        while not stop.is_set():
            await slots[i].acquire()
            if stop.is_set():
                return
            call_id, f = frames(i)
            sent[call_id] = loop.time()
            await socks[i].send_multipart(f, copy=False)

    readers = [asyncio.ensure_future(receive(i, s)) for i, s in enumerate(socks)]
    # As the SDK does when it connects (Session.warm): one ping with the token, so the
    # broker sees each connection authenticated at once. A connection that shows no
    # token within ZEXEC_BROKER_PREAUTH_TIMEOUT is closed as a would-be descriptor
    # hoarder, and a call written while that happens is lost.
    for i, s in enumerate(socks):
        await s.send_multipart(p.v1_ping(bytes(templates[i][3]).decode(), []), copy=False)
    await asyncio.sleep(job["settle"])  # let every connection finish its handshake
    cpu0, start = time.process_time(), loop.time()
    sent_total = 0
    if job["saturate"]:
        senders = [asyncio.ensure_future(closed_loop(i)) for i in range(len(socks))]
        await asyncio.sleep(job["seconds"])
        stop.set()
        for s in senders:
            s.cancel()
        done_at = loop.time()
        sent_total = len(lat) + len(sent)
    else:
        await open_loop()
        done_at = loop.time()
        sent_total = job["total"]
    in_window = len(lat)
    deadline = loop.time() + job["grace"]
    while sent and loop.time() < deadline:
        await asyncio.sleep(0.02)
    for r in readers:
        r.cancel()
    cpu = time.process_time() - cpu0
    ctx.destroy(linger=0)
    return {"lat": lat, "lost": len(sent), "errors": errors, "sent": sent_total,
            "completed_in_window": in_window, "wall": done_at - start, "cpu": cpu}


def generator(job: dict, out) -> None:
    _raise_nofile()
    try:
        out.put(asyncio.run(_generate(job)))
    except BaseException as exc:  # the parent reports it, with its row
        out.put({"failed": f"{type(exc).__name__}: {exc}"})


# --------------------------------------------------------------------------- the stack


class Stack:
    """``zexec up`` in a temporary state directory, and its two users connected."""

    def __init__(self, workers: int | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="zexec-load."))
        self.cli = str(Path(sys.executable).with_name("zexec"))
        env = dict(os.environ)
        if workers:
            env["ZEXEC_DEPLOY_SERVER_WORKERS"] = str(workers)
        # Both users are the bench's own: where `zexec up` cannot isolate users (no root,
        # no bubblewrap) it serves one user unless told they trust each other; where it
        # can, the flag changes nothing and the users stay isolated.
        subprocess.run([self.cli, "up", "--state-dir", str(self.dir), "--single-trust-domain"],
                       check=True,
                       env=env, stdout=subprocess.DEVNULL, timeout=300)
        self.conns: list[Any] = []
        try:
            self.info = json.loads((self.dir / "stack.json").read_text())
            for u in ("alice", "bob"):
                self.conns.append(zexec.connect(self.info["ep_api_url"], self.info["tokens"][u]))
                self.conns[-1].environment([f"python=={PYTHON}"], progress=False)
            self.broker = self.conns[0].client.broker  # the port zexec.connect picked
            self.broker_pid = self.info["components"]["broker"]["pid"]
        except BaseException:
            self.close()  # never leave a stack running behind a failed start
            raise

    def call_frames(self) -> list[list[bytes]]:
        """One no-op call per user, framed by that user's own client."""
        out = []
        for c in self.conns:
            c.client.call(noop)  # warm: the server has run it once
            ser = c.client._serializer(None)
            header = {"ser": ser.name, "py": PYTHON, "fn": "noop"}
            rest = [p.dump_header(header), c.client._frame(noop, ser),
                    *ser.dumps(((), {}))]
            out.append([bytes(f) for f in p.v1_request(p.CALL, c._token, b"\0" * 16, rest)])
        return out

    def close(self, logs: Path | None = None) -> None:
        """Terminate the users' servers, ``zexec down``, and keep the stack's logs in
        ``logs`` (the broker's says whether it ran short of descriptors, for example)."""
        for c in self.conns:
            try:
                c.terminate()
            finally:
                c.close()
        subprocess.run([self.cli, "down", "--state-dir", str(self.dir)],
                       stdout=subprocess.DEVNULL, timeout=120)
        if logs is not None and (self.dir / "logs").is_dir():
            shutil.copytree(self.dir / "logs", logs, dirs_exist_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- a run


def run_row(stack: Stack, calls: list, conns: int, rate: float, args) -> dict:
    procs = max(1, min(args.procs, conns))
    share = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
    total = int(rate * args.seconds)
    q = mp.get_context("spawn").Queue()
    jobs = []
    for n in share:
        jobs.append({
            "broker": stack.broker, "calls": calls, "connections": n,
            "rate": rate * n / conns, "total": total * n // conns, "seconds": args.seconds,
            "saturate": args.saturate, "window": args.window, "grace": args.grace,
            "settle": 1.0 + conns / 2000,
        })
    ps = [mp.get_context("spawn").Process(target=generator, args=(j, q)) for j in jobs]
    cpu0 = cpu_seconds(stack.broker_pid)
    for pr in ps:
        pr.start()
    results = [q.get(timeout=args.seconds * 4 + 120) for _ in ps]
    for pr in ps:
        pr.join(timeout=30)
    broker_cpu = cpu_seconds(stack.broker_pid) - cpu0
    failed = [r["failed"] for r in results if "failed" in r]
    if failed:
        return {"connections": conns, "failed": failed}
    lat = sorted(x for r in results for x in r["lat"])
    wall = max(r["wall"] for r in results)
    done = len(lat)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    gen_share = [r["cpu"] / max(r["wall"], 1e-9) for r in results]
    return {
        "connections": conns, "mode": "saturate" if args.saturate else "open",
        "rate": None if args.saturate else rate, "procs": procs,
        "sent": sum(r["sent"] for r in results), "completed": done,
        "throughput": sum(r["completed_in_window"] for r in results) / wall,
        "p50_ms": percentile(lat, 50) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": (lat[-1] * 1e3) if lat else float("nan"),
        "lost": sum(r["lost"] for r in results), "errors": errors,
        "broker_cpu_us_per_call": broker_cpu / max(done, 1) * 1e6,
        "generator_cpu_share": gen_share,
        "generator_bound": max(gen_share) > 0.85,
    }


def table(rows: list[dict]) -> str:
    out = ["| connections | mode | target calls/s | calls/s | p50 ms | p99 ms | max ms | lost "
           "| errors | broker CPU/call | generators' CPU (each, of a core) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "failed" in r:
            out.append(f"| {r['connections']} | failed: {'; '.join(r['failed'])[:200]} |")
            continue
        share = ", ".join(f"{s:.0%}" for s in r["generator_cpu_share"])
        flag = " **(generator-bound)**" if r["generator_bound"] else ""
        out.append(
            f"| {r['connections']} | {r['mode']} | {r['rate'] or '-'} | {r['throughput']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['lost']} "
            f"| {sum(r['errors'].values()) or 0} | {r['broker_cpu_us_per_call']:.0f} µs "
            f"| {share}{flag} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", default="1,100,1000",
                    help="comma-separated connection counts (default 1,100,1000)")
    ap.add_argument("--rate", default="1000", help="calls/s in total, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--procs", type=int, default=max(2, os.cpu_count() or 2),
                    help="generator processes (default: the number of cores, at least 2)")
    ap.add_argument("--saturate", action="store_true", help="closed loop: --window per connection")
    ap.add_argument("--window", type=int, default=1)
    ap.add_argument("--grace", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=0,
                    help="workers per user's server (ZEXEC_DEPLOY_SERVER_WORKERS; default: the stack's)")
    args = ap.parse_args(argv)
    _raise_nofile()
    load_before = os.getloadavg()[0]
    conns = [int(x) for x in args.connections.split(",")]
    rates = [float(x) for x in args.rate.split(",")]
    out = ROOT / "bench" / "results"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stack = Stack(args.workers or None)
    rows = []
    try:
        calls = stack.call_frames()
        for n in conns:
            for rate in ([0.0] if args.saturate else rates):
                rows.append(run_row(stack, calls, n, rate, args))
                print(f"done: {n} connections" + ("" if args.saturate else f" at {rate:g}/s"),
                      file=sys.stderr)
    finally:
        stack.close(logs=out / f"load-{stamp}-logs")
    print(f"load on `zexec up` ({stack.broker}), 2 users, {os.cpu_count()} cores, "
          f"{args.seconds:g} s per row, load average before: {load_before:.1f}\n")
    print(table(rows))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"load-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"\nrows: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
