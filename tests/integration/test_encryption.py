"""The encrypted (CurveZMQ) client port: same calls, nothing readable on the wire."""

from __future__ import annotations

import socket
import threading

import pytest
import zmq

import zexec


class Tap:
    """A TCP relay in front of a broker port that records every byte clients send."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.seen = bytearray()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("secure", [False, True])
def test_token_and_payload_visible_only_on_the_plain_port(shared_stack, secure):
    target = shared_stack.secure_port if secure else shared_stack.ports[0]
    tap = Tap(target)
    token = shared_stack.tokens["alice"]
    key = shared_stack.public_key if secure else None
    try:
        with zexec.Client(f"tcp://127.0.0.1:{tap.port}", token, server_key=key) as c:
            assert c.call(lambda s: s.upper(), "secret-payload-text") == "SECRET-PAYLOAD-TEXT"
    finally:
        tap.close()
    visible = token.encode() in tap.seen and b"secret-payload-text" in tap.seen
    assert visible is not secure


def test_secure_port_refuses_clients_without_the_right_key(shared_stack):
    for key in (None, zmq.curve_keypair()[0].decode()):
        with zexec.Client(shared_stack.secure_frontend, shared_stack.tokens["alice"],
                          server_key=key, connect_timeout=1.0) as c:
            with pytest.raises(zexec.BrokerUnreachable):
                c.call(abs, -1)
