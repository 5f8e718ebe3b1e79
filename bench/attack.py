"""The broker under attack: a legitimate user's no-op latency alone and during each flood,
in one run, with the broker's memory and CPU beside it.

    bash bench/run.sh attack [--calls 300] [--src DIR]

A real broker with alice's and bob's servers (1 worker each) runs on loopback
(tests/helpers/stack.py). Bob, the bystander, makes sequential no-op calls on one
connection: first quietly, then during each flood, which runs in two separate processes
(never in the measuring one) from their own loopback addresses until bob is done:

| flood | what the attackers do |
| --- | --- |
| token | 60 connections send calls with random tokens as fast as they can (reconnecting when closed) |
| message | 8 connections of an authenticated user (alice) send PINGs as fast as they can |
| big-frame | connections announce 4 GiB frames where the token belongs, and stream 256 MiB frames behind garbage tokens |
| many-frames | 200,000-frame messages, behind a garbage token and behind alice's valid one |
| idle-connection | 1,000 connections that go quiet (half never say anything, half showed a valid token) |
| routing-id squat | (first, on a fresh broker) 240 DEALERs with the ids glibc's rand() makes libzmq generate, on the client and backend ports; then bob connects anew |

Reported per row: bob's p50/p99 and their ratio to the quiet run (targets: p50 <= 2x),
the broker's peak RSS (``VmHWM``, reset before each flood) and its growth over idle
(target for the tokenless floods: <= 256 MiB), the broker's CPU share during the flood,
and whether it is alive after. ``--src DIR`` runs the broker and servers from another
source tree (e.g. ``git archive <ref> | tar -x -C /tmp/base``, then ``--src /tmp/base/src``)
for a before/after comparison on the same machine. Output: a markdown table on stdout,
progress on stderr, bench/results/attack-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from common import MIB, log, timed_sequential  # noqa: E402

FLOODS = ("token", "message", "big-frame", "many-frames", "idle-connection")
TOKENLESS = {"token", "big-frame", "idle-connection"}


# --------------------------------------------------------------------------- attackers


def _peer(port: int, source: str, **kw):
    from tests.helpers.raw_zmtp import RawPeer

    return RawPeer(port, source=source, timeout=5, **kw)


def flood_token(port: int, token: str, stop: float, worker: int) -> None:
    from tests.helpers.raw_zmtp import Closed

    fn, args = pickle.dumps(None), pickle.dumps(())

    def one(i: int) -> None:
        while time.monotonic() < stop:
            try:
                peer = _peer(port, f"127.0.{10 + worker}.{i % 6 + 1}")
                while time.monotonic() < stop:
                    peer.send([b"", random.randbytes(12).hex().encode(), fn, args])
                    peer.recv(0)
            except (Closed, OSError):
                pass

    _threads(one, 30)


def flood_message(port: int, token: str, stop: float, worker: int) -> None:
    from zexec.core import protocol as p
    from zexec.core import zmtp

    ping = b"".join(bytes(x) for x in zmtp.encode_message(p.v1_ping(token, [])))

    def one(i: int) -> None:
        peer = _peer(port, f"127.0.{20 + worker}.1")
        while time.monotonic() < stop:
            peer.send_raw(ping * 100)
            while peer.recv(0) is not None:
                pass

    _threads(one, 4)


def flood_big_frame(port: int, token: str, stop: float, worker: int) -> None:
    from tests.helpers.raw_zmtp import Closed, stream_frame
    from zexec.core import zmtp

    def giant(i: int) -> None:
        while time.monotonic() < stop:
            try:
                peer = _peer(port, f"127.0.{30 + worker}.{i + 1}")
                peer.send_raw(zmtp.frame_header(0, True))
                stream_frame(peer, 2**32 - 1, deadline=stop)
                peer.close()
            except (Closed, OSError):
                pass

    def garbage(i: int) -> None:
        while time.monotonic() < stop:
            try:
                peer = _peer(port, f"127.0.{40 + worker}.{i + 1}")
                while time.monotonic() < stop:
                    peer.send_raw(zmtp.frame_header(0, True) + zmtp.frame_header(7, True)
                                  + b"garbage")
                    stream_frame(peer, 256 * MIB, more=True, deadline=stop)
                    peer.send([b"args"])
                    peer.recv(0)
            except (Closed, OSError):
                pass

    _threads(lambda i: (giant if i % 2 else garbage)(i), 4)


def flood_many_frames(port: int, token: str, stop: float, worker: int) -> None:
    from tests.helpers.raw_zmtp import Closed
    from zexec.core import protocol as p
    from zexec.core import zmtp

    frames = b"\x01\x00" * 199_999 + b"\x00\x00"

    def one(i: int) -> None:
        tok = token.encode() if i % 2 else b"garbage-token"
        while time.monotonic() < stop:
            try:
                peer = _peer(port, f"127.0.{50 + worker}.{i + 1}")
                while time.monotonic() < stop:
                    head = [b"", p.MAGIC, p.CALL, tok, os.urandom(16), b"{}", b"fn"]
                    peer.send_raw(b"".join(zmtp.frame_header(len(f), True) + f
                                           for f in head) + frames)
                    peer.recv(0)
            except (Closed, OSError):
                pass

    _threads(one, 2)


def flood_idle_connection(port: int, token: str, stop: float, worker: int) -> None:
    from zexec.core import protocol as p

    peers = []
    for i in range(500):
        try:
            peer = _peer(port, f"127.0.{60 + worker}.{i % 250 + 1}", handshake=i % 2 == 0)
            if i % 2 == 0:
                peer.send(p.v1_ping(token, []))
            peers.append(peer)
        except OSError:
            break
    while time.monotonic() < stop:
        time.sleep(0.1)
    for peer in peers:
        peer.close()


def _threads(fn, n: int) -> None:
    threads = [threading.Thread(target=fn, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def attacker_main(args: argparse.Namespace) -> None:
    stop = time.monotonic() + args.seconds
    globals()["flood_" + args.flood.replace("-", "_")](args.port, args.token, stop,
                                                        args.worker)


# --------------------------------------------------------------------------- measuring


def glibc_rand_ids() -> list[bytes]:
    libc = ctypes.CDLL("libc.so.6")
    libc.srand(1)
    firsts = [libc.rand() for _ in range(8)]
    return [b"\x00" + ((b + k) & 0xFFFFFFFF).to_bytes(4, "big") for b in firsts for k in range(30)]


def noop():
    return None


def measure(args: argparse.Namespace) -> dict:
    import zexec
    from tests.helpers.procs import cpu_seconds, memory, reset_peak
    from tests.helpers.stack import Stack

    if args.src:
        os.environ["PYTHONPATH"] = str(Path(args.src).resolve())
    workdir = Path(tempfile.mkdtemp(prefix="zexec-attack-"))
    s = Stack(workdir)
    s.start_broker()
    for user in ("alice", "bob"):
        s.start_server(user, workers=1)
    pid = s.broker.pid
    attacker_env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rows: dict[str, dict] = {}

    def settle() -> None:
        """Wait (at most 20 s) until the broker has worked off what a flood left queued."""
        deadline = time.monotonic() + 20
        while s.broker.poll() is None and time.monotonic() < deadline:
            before = cpu_seconds(pid)
            time.sleep(0.5)
            if cpu_seconds(pid) - before < 0.05:
                return

    def bob_latency(client) -> dict:
        return timed_sequential(lambda: client.call(noop), 20, args.calls)

    def row(name: str, run) -> None:
        nonlocal pid, client
        restarted = False
        if s.broker.poll() is not None:  # killed by an earlier row: a fresh stack for this
            for user in list(s.servers):
                s.kill_server(user)
            s.start_broker()
            for user in ("alice", "bob"):
                s.start_server(user, workers=1)
            pid, restarted = s.broker.pid, True
            client.close()
            client = zexec.Client(s.frontend, s.tokens["bob"], connect_timeout=30,
                                  liveness_timeout=30)
            client.call(noop)
        reset_peak(pid)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        try:
            lat = run()
        except Exception as exc:  # noqa: BLE001 - a broken row is a result here
            lat = {"error": f"{type(exc).__name__}: {exc}"}
        cpu = (cpu_seconds(pid) - cpu0) / max(time.monotonic() - t0, 1e-9)
        alive = s.broker.poll() is None
        rows[name] = {**lat, "rss_peak": memory(pid, "VmHWM") if alive else None,
                      "broker_cpu": cpu, "alive": alive, "restarted": restarted}
        log(f"attack: {name}: p50 {lat.get('p50_ms', '-')} ms, alive {alive}")

    client = zexec.Client(s.frontend, s.tokens["bob"], connect_timeout=30,
                          liveness_timeout=30)
    try:
        client.call(noop)
        time.sleep(1)
        idle_rss = memory(pid)
        row("quiet", lambda: bob_latency(client))

        def squat() -> dict:
            import zmq

            ctx = zmq.Context()
            socks = []
            for url in (s.frontend, s.backend):
                for ident in glibc_rand_ids():
                    sock = ctx.socket(zmq.DEALER)
                    sock.setsockopt(zmq.LINGER, 0)
                    sock.setsockopt(zmq.ROUTING_ID, ident)
                    sock.connect(url)
                    socks.append(sock)
            time.sleep(1)
            try:
                fresh = zexec.Client(s.frontend, s.tokens["bob"], connect_timeout=5,
                                     liveness_timeout=5)
                fresh.call(noop)
                return bob_latency(fresh)
            finally:
                for sock in socks:
                    sock.close(0)
                ctx.term()

        # First: libzmq's generated ids are predictable only while few peers connected.
        if "routing-id-squat" in args.floods:
            row("routing-id squat", squat)
            settle()
        for flood in args.floods:
            if flood not in FLOODS:
                continue
            procs = [subprocess.Popen(
                [sys.executable, __file__, "--flood", flood, "--port", str(s.ports[0]),
                 "--token", s.tokens["alice"], "--seconds", "600",
                 "--worker", str(w)], env=attacker_env, cwd=REPO,
                # Attackers are other machines: their own CPU must not be the broker's.
                preexec_fn=lambda: os.nice(19))
                for w in range(2)]
            time.sleep(args.ramp)

            def during() -> dict:
                lat = bob_latency(client)
                t = time.monotonic()
                new = zexec.Client(s.frontend, s.tokens["bob"], connect_timeout=30)
                new.call(noop)
                lat["new_client_first_call_ms"] = (time.monotonic() - t) * 1e3
                new.close()
                return lat

            row(flood, during)
            for proc in procs:
                proc.kill()
                proc.wait()
            settle()

    finally:
        client.close()
        s.close()
    return {"idle_rss": idle_rss, "rows": rows, "src": args.src or str(REPO / "src"),
            "calls": args.calls}


def table(res: dict) -> str:
    rows, idle = res["rows"], res["idle_rss"]
    quiet = rows["quiet"]
    out = ["| flood | bob p50 ms | bob p99 ms | p50 / quiet | p99 / quiet | new client's "
           "first call ms | broker RSS peak MiB | growth over idle MiB | broker CPU | "
           "alive | targets |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        if "error" in r:
            out.append(f"| {name} | {r['error'][:60]} | | | | | | | | {r['alive']} | |")
            continue
        rss = r["rss_peak"]
        growth = None if rss is None else (rss - idle) / MIB
        ratio50 = r["p50_ms"] / quiet["p50_ms"]
        ratio99 = r["p99_ms"] / quiet["p99_ms"]
        targets = []
        if name not in ("quiet", "routing-id squat"):
            targets.append("p50 " + ("met" if ratio50 <= 2 else "**NOT met**"))
        if name in TOKENLESS and growth is not None:
            targets.append("RSS " + ("met" if growth <= 256 else "**NOT met**"))
        first = r.get("new_client_first_call_ms")
        if r.get("restarted"):
            name += " (broker restarted first: the last row killed it)"
        out.append(
            f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {ratio50:.2f} | "
            f"{ratio99:.2f} | {'' if first is None else f'{first:.1f}'} | "
            f"{'' if rss is None else f'{rss / MIB:.0f}'} | "
            f"{'' if growth is None else f'{growth:.0f}'} | {r['broker_cpu']:.0%} | "
            f"{'yes' if r['alive'] else '**died**'} | {', '.join(targets)} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=600, help=argparse.SUPPRESS)
    ap.add_argument("--ramp", type=float, default=0.5, help="seconds before measuring")
    ap.add_argument("--calls", type=int, default=300, help="bob's calls per row")
    ap.add_argument("--src", default="", help="run the broker and servers from this tree")
    ap.add_argument("--floods", type=lambda v: v.split(","),
                    default=[*FLOODS, "routing-id-squat"],
                    help="the rows to run, comma-separated (default: all). The big-frame "
                         "and many-frames floods make a broker without limits grow until "
                         "the kernel's OOM killer stops it")
    ap.add_argument("--flood", choices=FLOODS, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--token", help=argparse.SUPPRESS)
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.flood:
        attacker_main(args)
        return
    res = measure(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    (results / f"attack-{stamp}.json").write_text(json.dumps(res, indent=1))
    print(f"## zexec under attack {stamp} ({os.cpu_count()} CPUs; broker from {res['src']})\n")
    print(table(res))
    print(f"\nbroker idle RSS {res['idle_rss'] / MIB:.0f} MiB; each flood from 2 processes "
          f"while bob makes {res['calls']} sequential no-op calls on his connection, then "
          "one call on a new one.")
    print(f"JSON: bench/results/attack-{stamp}.json")


if __name__ == "__main__":
    main()
