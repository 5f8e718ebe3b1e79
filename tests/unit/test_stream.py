"""The byte stream under ZMTP: TLS over a socket pair (memory BIOs, partial writes under
the ciphertext backlog) carries many small buffers and a large one byte for byte."""

from __future__ import annotations

import os
import socket

import pytest

from zexec.adapters.transport_zmtp.stream import TlsStream
from zexec.adapters.transport_zmtp.tls import client_context, make_self_signed, server_context


@pytest.fixture
def tls_pair(tmp_path):
    make_self_signed(tmp_path / "c.pem", tmp_path / "k.pem", ["127.0.0.1"], days=1)
    a, b = socket.socketpair()
    server = TlsStream(a, server_context(str(tmp_path / "c.pem"), str(tmp_path / "k.pem")),
                       server_side=True)
    client = TlsStream(b, client_context(pinned=True), server_side=False)
    for _ in range(100):
        if client.handshake() & server.handshake():
            break
    else:
        pytest.fail("the TLS handshake did not finish")
    yield client, server
    client.close()
    server.close()


def test_tls_carries_small_and_large_buffers_in_order(tls_pair):
    client, server = tls_pair
    bufs: list[bytes] = []
    for i in range(200):  # a message's worth of frame headers and small frames, many times
        bufs += [bytes([1, 5]), f"f{i:04d}".encode()]
    bufs.append(os.urandom(3 << 20))  # more than the ciphertext backlog: partial writes
    bufs += [b"\x00\x03", b"end"]
    want = b"".join(bufs)
    got = bytearray()
    sent = 0
    buf = memoryview(bytearray(1 << 20))
    while len(got) < len(want):
        if sent < len(want):
            sent += client.send([memoryview(want)[sent:]] if sent else bufs)
        client.flush()
        try:
            while True:
                n = server.recv_into(buf)
                if n == 0:
                    break
                got += buf[:n]
        except BlockingIOError:
            pass
    assert bytes(got) == want
