"""One contract, two implementations: the in-memory fake and the ZMTP adapter of the
Transport port (against a real libzmq ROUTER, plain, and against zexec's own gateway over
TLS) must behave alike for everything the client session relies on."""

from __future__ import annotations

import threading

import pytest
import zmq

from tests.helpers.transport_memory import InMemoryTransport
from zexec.adapters.transport_zmq.frames import recv_frames, send_frames
from zexec.adapters.transport_zmtp.client import ZmtpTransport


class ZmqPeer:
    """The far end of a ZmtpTransport: a libzmq ROUTER that can echo or stay silent."""

    def __init__(self) -> None:
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.last_rid = b""

    def recv(self, timeout: float):
        if not self.sock.poll(timeout * 1000):
            return None
        frames = recv_frames(self.sock)
        self.last_rid = frames[0]
        return [bytes(f) for f in frames[1:]]

    def send(self, frames) -> bool:
        send_frames(self.sock, [self.last_rid, *frames])
        return True

    def close(self) -> None:
        self.sock.close(0)


@pytest.fixture(params=["memory", "zmq"])
def ends(request):
    if request.param == "memory":
        a, b = InMemoryTransport.pair()
        yield a, b
        a.close()
        return
    peer = ZmqPeer()
    client = ZmtpTransport(f"tcp://127.0.0.1:{peer.port}")
    # send() refuses until the connection is up.
    for _ in range(500):
        if client.send([b"", b"hello"]):
            break
        client.recv(0.01)
    assert peer.recv(5) == [b"", b"hello"]
    yield client, peer
    client.close()
    peer.close()


def test_messages_arrive_whole_and_in_order(ends):
    client, peer = ends
    big = bytes(range(256)) * 4096  # 1 MiB, sent zero-copy
    for i in range(50):
        assert client.send([b"", str(i).encode(), big if i == 7 else b"x"])
    got = []
    for _ in range(50):
        msg = peer.recv(0.01)
        while msg is None:
            client.recv(0.01)  # the transport writes while its owner drives it
            msg = peer.recv(0.01)
        got.append(msg)
    assert [m[1] for m in got] == [str(i).encode() for i in range(50)]
    assert bytes(got[7][2]) == big


def test_replies_reach_the_client(ends):
    client, peer = ends
    client.send([b"", b"ping"])
    peer.recv(5)
    big = bytes(range(256)) * 8192  # 2 MiB: arrives straight into a buffer of its own
    peer.send([b"", b"pong", memoryview(b"payload"), big])
    msg = client.recv(5)
    assert [bytes(f) for f in msg] == [b"", b"pong", b"payload", big]


def test_recv_times_out_with_none(ends):
    client, _ = ends
    assert client.recv(0) is None
    assert client.recv(0.05) is None


@pytest.mark.timeout(30)
def test_wake_interrupts_a_blocked_recv(ends):
    client, _ = ends
    woken = threading.Event()

    def wake():
        woken.set()
        client.wake()

    threading.Timer(0.05, wake).start()
    # Without a working wake() this recv would block for an hour and the test time out.
    assert client.recv(3600) is None
    assert woken.is_set()
