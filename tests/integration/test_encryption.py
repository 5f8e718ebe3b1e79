"""The encrypted (TLS) client port: same calls, nothing readable on the wire; the
pinned certificate and nothing else."""

from __future__ import annotations

import socket
import threading

import pytest

import zexec
from zexec.core.errors import ConfigurationError


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
    scheme, pin = ("tls", shared_stack.tls_pin) if secure else ("tcp", None)
    try:
        with zexec.Client(f"{scheme}://127.0.0.1:{tap.port}", token, tls_pin=pin) as c:
            assert c.call(lambda s: s.upper(), "secret-payload-text") == "SECRET-PAYLOAD-TEXT"
    finally:
        tap.close()
    visible = token.encode() in tap.seen and b"secret-payload-text" in tap.seen
    assert visible is not secure
    if secure:
        assert b"\x16\x03" in tap.seen[:8]  # a TLS handshake record first
        assert b"NULL" not in tap.seen  # not even the ZMTP greeting is in clear


def test_secure_port_refuses_other_certificates_and_plain_clients(shared_stack):
    other = "ab" * 32
    for url, pin in ((shared_stack.secure_frontend, other),
                     (shared_stack.secure_frontend.replace("tls://", "tcp://"), None)):
        with zexec.Client(url, shared_stack.tokens["alice"], tls_pin=pin,
                          connect_timeout=1.0) as c:
            with pytest.raises(zexec.BrokerUnreachable) as info:
                c.call(abs, -1)
        if pin:
            assert "does not match the pin" in str(info.value)


def test_without_a_pin_the_certificate_must_be_trusted(shared_stack):
    # A self-signed certificate no CA vouches for: refused unless pinned.
    with zexec.Client(shared_stack.secure_frontend, shared_stack.tokens["alice"],
                      connect_timeout=1.0) as c:
        with pytest.raises(zexec.BrokerUnreachable, match="certificate"):
            c.call(abs, -1)


def test_bad_pins_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="64 hex digits"):
        zexec.Client("tls://127.0.0.1:1", "t", tls_pin="nope")
    with pytest.raises(ConfigurationError, match="tls://"):
        zexec.Client("tcp://127.0.0.1:1", "t", tls_pin="ab" * 32)
