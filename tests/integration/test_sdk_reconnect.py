"""When the SDK's transport connects again: at once after a connection that served a
while ended (the broker closes idle connections: a notebook's first call after a pause
must not wait for a back-off), after a back-off when one ends as soon as it is up. A
real socket on loopback plays the broker (ZMTP handshake, then a close); the
transport's clock is a fake, so "at once" means without the clock moving."""

from __future__ import annotations

import socket
import time

import pytest

from zexec.adapters.transport_zmtp.client import RECONNECT_MIN, STABLE_AFTER, ZmtpTransport
from zexec.core import zmtp

pytestmark = pytest.mark.timeout(60)


def step(t: ZmtpTransport) -> None:
    """Let the transport move (recv with no wait: its clock is frozen), then let the
    other side move."""
    t.recv(0)
    time.sleep(0.01)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def broker():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    yield listener
    listener.close()


def accept(listener: socket.socket) -> socket.socket | None:
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return None
    conn.settimeout(5)
    return conn


def serve_handshake(listener: socket.socket, t: ZmtpTransport) -> socket.socket:
    """Accept the transport's connection and complete the ZMTP handshake with it."""
    conn = None
    for _ in range(200):
        step(t)
        conn = conn or accept(listener)
        if conn is not None:
            break
    assert conn is not None, "the transport did not connect"
    codec = zmtp.Codec("ROUTER", as_server=True)
    conn.sendall(codec.data_to_send())
    for _ in range(200):
        step(t)
        if t.connected:
            return conn
        conn.settimeout(0.01)
        try:
            data = conn.recv(65536)
        except TimeoutError:
            data = b""
        if data:
            codec.receive(data)
            while codec.next_event() is not None:
                pass
            out = codec.data_to_send()
            if out:
                conn.sendall(out)
    pytest.fail("the ZMTP handshake did not complete")


def notice_close(t: ZmtpTransport) -> None:
    for _ in range(200):
        step(t)
        if not t.connected:
            return
    pytest.fail("the transport did not notice the close")


def test_a_connection_that_served_a_while_is_replaced_at_once(broker):
    clock = Clock()
    t = ZmtpTransport(f"tcp://127.0.0.1:{broker.getsockname()[1]}", clock=clock)
    try:
        conn = serve_handshake(broker, t)
        clock.now += STABLE_AFTER + 60  # a pause in the notebook; the broker closes
        conn.close()
        notice_close(t)
        t.recv(0)  # the clock has not moved: no back-off to wait for
        again = None
        for _ in range(200):
            again = accept(broker)
            if again is not None:
                break
            step(t)
        assert again is not None, "no new connection without the clock moving"
        again.close()
    finally:
        t.close()


def test_a_connection_that_ends_as_soon_as_it_is_up_backs_off(broker):
    clock = Clock()
    t = ZmtpTransport(f"tcp://127.0.0.1:{broker.getsockname()[1]}", clock=clock)
    try:
        serve_handshake(broker, t).close()  # e.g. a broker that drops every newcomer
        notice_close(t)
        for _ in range(20):
            step(t)
        assert accept(broker) is None  # waiting for its back-off, on its own clock
        clock.now += RECONNECT_MIN
        assert serve_handshake(broker, t) is not None
    finally:
        t.close()
