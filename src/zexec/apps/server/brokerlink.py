"""A worker's own connection to the broker (direct dispatch): calls come in on it, the
worker's v1 events go out on it (``WRPL``), and it says when the worker is idle (``WRDY``)."""

from __future__ import annotations

import sys
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zexec.adapters.transport_zmq.frames import NOBLOCK, send_frames
from zexec.core import protocol as p


class BrokerLink:
    """The worker's own connection to the broker, for v1 events (``WRPL``)."""

    def __init__(self, sock: Any, user_id: str, credential: str, monitor: Any = None) -> None:
        self.sock = sock
        self.user_id = user_id
        self.credential = credential
        self.monitor = monitor  # the socket's disconnect events (None in unit tests)
        self.reconnected = False

    def send(self, client_id: bytes, call_id: bytes, final: bool, body: list[Any]) -> None:
        self._send(p.worker_reply(self.user_id, self.credential, client_id, call_id, final,
                                  body))

    def ready(self) -> None:
        """Tell the broker this worker is idle (direct dispatch), and whether the
        connection broke since the last call (see :func:`zexec.core.protocol.worker_ready`)."""
        self._send(p.worker_ready(self.user_id, self.credential, self.reconnected))
        self.reconnected = False

    def watch(self) -> None:
        """Take the connection monitor's news (never blocks)."""
        while self.monitor.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            if recv_monitor_message(self.monitor)["event"] == zmq.EVENT_DISCONNECTED:
                self.reconnected = True

    def _send(self, frames: list[Any]) -> None:
        try:
            send_frames(self.sock, frames, NOBLOCK)
        except zmq.Again:
            # Only when the broker has been unreachable for a whole send queue: the
            # client's liveness check turns the call into an error.
            sys.__stderr__.write("zexec worker: broker unreachable; a message was dropped\n")


def broker_link(ctx: zmq.Context, broker: list[str] | None) -> BrokerLink | None:
    """The direct connection to the broker the server asked for (``[url, user id,
    credential, routing id]`` in CONFIG), or None (calls and events then go through the
    server)."""
    if not broker:
        return None
    url, user_id, credential, routing_id = broker
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, routing_id.encode())  # the server names us by it
    # A dead TCP connection is noticed at both ends (TTL: the broker drops it too, so
    # the reconnection, with the same routing id, is accepted) and replaced; the
    # monitor tells the worker it happened (its next WRDY says so).
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.setsockopt(zmq.HEARTBEAT_TTL, 3000)
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    # Queued (not dropped) until connected: a worker's first result may be ready before
    # its TCP connection is; LINGER lets the last events of a call leave on exit.
    sock.setsockopt(zmq.LINGER, 2000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    sock.connect(url)
    return BrokerLink(sock, user_id, credential, monitor)
