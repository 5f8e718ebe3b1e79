"""The raw floors under zexec's figures: one hop, no zexec code, on loopback.

Run by bench/run.py (or alone: ``.venv/bin/python bench/floors.py --sizes '{...}'``).
An echo server thread and a client in this process, for each transport:

* ``plain``: pyzmq DEALER -> ROUTER over TCP (what the released clients and a loopback
  ``zexec.connect`` use, minus zexec);
* ``curve``: the same with CurveZMQ (libzmq's encryption);
* ``tls``: a TCP socket wrapped by Python's ``ssl`` (TLS 1.3, OpenSSL: what zexec's
  encrypted client port speaks), length-prefixed messages.

Per transport: the no-op round trip (an empty message there and back; p50/p99 of
``calls`` after ``warmup``) and the round trip of a ``payload_mib`` MiB buffer (median of
``payload_reps``). A zexec call crosses two hops (client -> broker -> worker and back),
so its floor is about twice these. Prints one marked JSON line (common.emit).
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zmq  # noqa: E402
from common import MIB, Sizes, emit, latency_stats, median_summary  # noqa: E402


def _zmq_pair(curve: bool):
    ctx = zmq.Context()
    server, client = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    if curve:
        spub, ssec = zmq.curve_keypair()
        cpub, csec = zmq.curve_keypair()
        server.curve_server, server.curve_secretkey = True, ssec
        client.curve_serverkey, client.curve_publickey, client.curve_secretkey = spub, cpub, csec
    port = server.bind_to_random_port("tcp://127.0.0.1")
    client.connect(f"tcp://127.0.0.1:{port}")

    def echo() -> None:
        try:
            while True:
                server.send_multipart(server.recv_multipart(copy=False), copy=False)
        except zmq.ContextTerminated:
            server.close(0)

    threading.Thread(target=echo, daemon=True).start()

    def rt(msg) -> int:
        client.send(msg, copy=False)
        return len(client.recv(copy=False))

    def close() -> None:
        client.close(0)
        ctx.term()

    return rt, close


def _tls_pair():
    tmp = Path(tempfile.mkdtemp(prefix="zexec-floor."))
    key, crt = tmp / "k.pem", tmp / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.minimum_version = ssl.TLSVersion.TLSv1_3
    sctx.load_cert_chain(crt, key)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname, cctx.verify_mode = False, ssl.CERT_NONE
    lst = socket.create_server(("127.0.0.1", 0))
    port = lst.getsockname()[1]

    def recv_exact(s, n: int) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = s.recv_into(view[got:])
            if not k:
                raise ConnectionError("closed")
            got += k
        return buf

    def echo() -> None:
        conn, _ = lst.accept()
        s = sctx.wrap_socket(conn, server_side=True)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                n = struct.unpack("!Q", recv_exact(s, 8))[0]
                s.sendall(struct.pack("!Q", n) + recv_exact(s, n))
        except (ConnectionError, ssl.SSLError, OSError):
            s.close()

    threading.Thread(target=echo, daemon=True).start()
    c = cctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def rt(msg) -> int:
        c.sendall(struct.pack("!Q", len(msg)))
        c.sendall(msg)
        n = struct.unpack("!Q", recv_exact(c, 8))[0]
        return len(recv_exact(c, n))

    def close() -> None:
        c.close()
        lst.close()
        for f in (key, crt):
            f.unlink()
        tmp.rmdir()

    return rt, close


def measure(rt, sizes: Sizes) -> dict:
    empty = b""
    for _ in range(sizes.warmup):
        rt(empty)
    samples = []
    t0 = time.perf_counter()
    for _ in range(sizes.calls):
        s = time.perf_counter()
        rt(empty)
        samples.append(time.perf_counter() - s)
    latency = latency_stats(samples, time.perf_counter() - t0)
    big = os.urandom(MIB) * sizes.payload_mib
    rt(big[:MIB])
    times = []
    for _ in range(sizes.payload_reps):
        s = time.perf_counter()
        assert rt(big) == len(big)
        times.append(time.perf_counter() - s)
    return {"latency": latency, "payload": median_summary(times)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default=Sizes().to_json())
    args = ap.parse_args()
    sizes = Sizes.from_json(args.sizes)
    out = {}
    for name, make in (("plain", lambda: _zmq_pair(False)), ("curve", lambda: _zmq_pair(True)),
                       ("tls", _tls_pair)):
        rt, close = make()
        try:
            out[name] = measure(rt, sizes)
        finally:
            close()
    emit(out)


if __name__ == "__main__":
    main()
