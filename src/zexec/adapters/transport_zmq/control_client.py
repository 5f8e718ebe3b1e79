"""The broker's control port, from the client side: one command per short-lived DEALER
(``broker_control``) and the :class:`~zexec.core.ports.ServerRegistry` the Kubernetes
orchestrator reads servers' readiness from (``BrokerControlClient``)."""

from __future__ import annotations

from typing import Any

import zmq

from zexec.core.protocol import control


def broker_control(
    host: str, port: int, admin: str, command: bytes | None = None, timeout: float = 2.0,
    *args: bytes,
) -> dict[str, Any] | None:
    """One control command (default: STATUS) on a DEALER; None if no answer in
    ``timeout`` seconds (or not JSON)."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    s.setsockopt(zmq.RECONNECT_IVL, 20)  # a broker still starting is seen soon after it binds
    try:
        s.connect(f"tcp://{host}:{port}")
        s.send_multipart(control.control_request(admin, command or control.STATUS, *args))
        return control.parse_control_reply(s.recv_multipart())
    except (zmq.ZMQError, ValueError):
        return None
    finally:
        s.close()


class BrokerControlClient:
    """:class:`~zexec.core.ports.ServerRegistry` over the control port's ``SERVER``
    command. A socket per question: questions come from a web server's threads (a
    socket is not thread-safe) a few times a second per waiting user, and a loopback or
    in-cluster connect costs far less than the probe period it saves."""

    def __init__(self, host: str, port: int, admin_token: str, timeout: float = 0.5) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._admin = admin_token

    def server_info(self, user_id: str) -> dict[str, Any] | None:
        reply = broker_control(self.host, self.port, self._admin, control.SERVER,
                               self.timeout, user_id.encode())
        if not reply or not reply.get("ok") or not isinstance(reply.get("server"), dict):
            return None
        return reply["server"]

    def __repr__(self) -> str:  # never the admin token
        return f"BrokerControlClient({self.host}:{self.port})"
