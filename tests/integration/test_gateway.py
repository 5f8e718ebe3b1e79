"""The broker's gateway with real sockets: ZMTP refusals with reasons, heartbeats both
ways, idle and pre-auth timeouts (the SDK reconnects transparently), peers that stop
reading, and what the gateway reports in STATUS."""

from __future__ import annotations

import os
import pickle
import socket
import sys
import time

import numpy as np
import pytest
import zmq

import zexec
from tests.helpers.raw_zmtp import RawPeer
from tests.helpers.remote_funcs import filled, sleeper
from tests.helpers.stack import Stack, wait_for
from zexec.adapters.serializer import default_registry
from zexec.core import protocol as p
from zexec.core import zmtp

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """A broker with short timeouts, and alice's server."""
    s = Stack(tmp_path_factory.mktemp("gw"), extra_broker_env={
        "ZEXEC_BROKER_IDLE_TIMEOUT": "1.5", "ZEXEC_BROKER_PREAUTH_TIMEOUT": "1.5",
        "ZEXEC_BROKER_WRITE_TIMEOUT": "2", "ZEXEC_BROKER_MAX_OUTPUT_BYTES": str(4 << 20),
    })
    s.start_broker()
    s.start_server("alice", workers=1)
    yield s
    s.close()


def counts(s: Stack) -> dict:
    return s.control_command(b"STATUS")["status"]["gateway"]["counts"]


def refusal(port: int, data: bytes) -> str:
    """What the broker says (its ERROR reason) before it closes, given ``data``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        got = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    codec = zmtp.Codec("DEALER", as_server=False)
    codec.receive(got)
    try:
        while (ev := codec.next_event()) is not None:
            if isinstance(ev, zmtp.PeerError):
                return ev.reason
    except zmtp.ZmtpError:
        pass
    return ""


@pytest.mark.parametrize("greeting,why", [
    (b"\xff" + bytes(8) + b"\x7f\x03\x00" + b"CURVE".ljust(20, b"\x00") + bytes(32),
     "mechanism 'CURVE'"),
    (b"\xff" + bytes(8) + b"\x7f\x02\x05", "ZMTP 2.0"),
    (zmtp.greeting(False) + zmtp.ready("PUB"), "PUB socket cannot talk"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a ZeroMQ"),
])
def test_refusals_say_why(quick, greeting, why):
    assert why in refusal(quick.ports[0], greeting)


def test_pings_are_answered_with_their_context(quick):
    peer = RawPeer(quick.ports[0])
    peer.send_raw(zmtp.ping(0, b"ctx-1"))
    peer.sock.settimeout(5)
    codec = peer.codec
    deadline = time.monotonic() + 5
    pong = None
    while pong is None and time.monotonic() < deadline:
        codec.receive(peer.sock.recv(4096))
        while (ev := codec.next_event()) is not None:
            if isinstance(ev, zmtp.Pong):
                pong = ev
    assert pong == zmtp.Pong(b"ctx-1")
    peer.close()


def test_each_message_is_judged_by_its_own_token_on_one_connection(quick):
    """The gateway remembers a connection's last token and its hash; a message with
    another token (someone else's, or a bad one) is never taken for the last one."""
    peer = RawPeer(quick.ports[0])

    def ping(token: str):
        peer.send(p.v1_ping(token, []))
        frames = peer.recv(10)
        assert frames is not None
        return p.parse_client_bound(frames[1:])

    for _ in range(2):
        assert ping(quick.tokens["alice"])["server"] is True
        assert ping("not-a-token").header["code"] == "UNAUTHENTICATED"
        assert ping(quick.tokens["bob"])["server"] is False  # bob has no server here
        assert ping(quick.tokens["alice"])["server"] is True
    peer.close()


def test_a_peer_silent_beyond_its_own_ttl_is_closed(quick):
    peer = RawPeer(quick.ports[0])
    peer.send(p.v1_ping(quick.tokens["alice"], []))  # authenticated: not a pre-auth timeout
    assert peer.recv(5) is not None
    before = counts(quick).get("ttl_expired", 0)
    peer.send_raw(zmtp.ping(0.5))  # "close me if I am silent for 0.5 s"
    assert peer.wait_closed(10)
    assert counts(quick).get("ttl_expired", 0) > before  # not the (longer) idle timeout
    peer.close()


def test_a_peer_without_a_token_is_closed_after_the_preauth_timeout(quick):
    peer = RawPeer(quick.ports[0])
    before = counts(quick).get("preauth_timeout", 0)
    assert peer.wait_closed(10)
    assert counts(quick).get("preauth_timeout", 0) > before
    peer.close()


def test_idle_connections_are_closed_and_the_sdk_reconnects_by_itself(quick):
    with zexec.Client(quick.frontend, quick.tokens["alice"]) as c:
        assert c.call(abs, -1) == 1
        before = counts(quick).get("idle_closed", 0)
        wait_for(lambda: counts(quick).get("idle_closed", 0) > before, timeout=10,
                 what="the idle connection to be closed")
        assert c.call(abs, -2) == 2  # a new connection, no error


def test_a_call_in_flight_keeps_a_silent_connection_open(quick):
    # A legacy-style client waits silently for a long call: never idle while it runs.
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(quick.frontend)
    dill = default_registry().get("dill")
    sock.send_multipart([b"", quick.tokens["alice"].encode(), dill.dumps(sleeper, False)[0],
                         dill.dumps((3.5,), False)[0]])
    events = []
    while sock.poll(10_000):
        events.append(pickle.loads(sock.recv_multipart()[-1]))
        if events[-1].get("type") in ("END", "ERROR"):
            break
    assert any(e.get("data") == "woke" for e in events if isinstance(e, dict)), events
    sock.close(0)


def test_a_peer_that_stops_reading_is_closed(quick):
    # Results it never reads pile up: beyond MAX_OUTPUT_BYTES they are dropped, and
    # after WRITE_TIMEOUT without reading anything the connection goes.
    peer = RawPeer(quick.ports[0])
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ser = default_registry().get("cloudpickle")
    header = p.dump_header({"ser": "cloudpickle", "py": PY})
    fn = ser.dumps(filled, False)[0]
    for _ in range(8):
        peer.send(p.v1_request(p.CALL, quick.tokens["alice"], os.urandom(16),
                               [header, fn, *ser.dumps(((2 << 20,), {}))]))
    before = counts(quick).get("write_timeout", 0)
    wait_for(lambda: counts(quick).get("write_timeout", 0) > before, timeout=30,
             what="the non-reading peer to be closed")
    peer.close()
    with zexec.Client(quick.frontend, quick.tokens["alice"]) as c:
        assert c.call(filled, 1 << 20).nbytes == 1 << 20


def test_status_reports_the_gateway(quick):
    g = quick.control_command(b"STATUS")["status"]["gateway"]
    assert g["connections"] >= 1 and g["preauth_bytes"] >= 0 and g["payload_bytes"] >= 0
    assert set(g["token_checks"]) == {"running", "queued"}


def test_large_frames_are_freed_once_sent(quick):
    with zexec.Client(quick.frontend, quick.tokens["alice"]) as c:
        arr = np.ones(8 << 20, dtype=np.uint8)
        assert c.call(len, arr) == arr.nbytes
    wait_for(lambda: quick.control_command(b"STATUS")["status"]["gateway"]["payload_bytes"]
             == 0, timeout=10, what="the broker to let go of the payload")
