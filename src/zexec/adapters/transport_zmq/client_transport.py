"""The client's connection to the broker: one DEALER socket, owned by one I/O thread."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zexec.adapters.transport_zmq.frames import NOBLOCK, recv_frames, send_frames

EVENTS, POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
#: Monitor events that change whether the connection is up.
UP = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
DOWN = int(zmq.EVENT_DISCONNECTED)


class ZmqTransport:
    """:class:`~zexec.core.ports.Transport` over a ZeroMQ DEALER.

    ``send`` fails fast (False) while no connection to the broker is up, instead of
    queueing calls that would reach a broker restarted minutes later. Whether it is up
    comes from the socket's monitor (handshake succeeded / disconnected), not from
    ``ZMQ_IMMEDIATE``: with that option ZeroMQ discards the messages already received but
    not yet read when the connection drops, which lost the last results a draining broker
    sent just before it closed. ZeroMQ heartbeats notice a silent peer; reconnection is
    automatic.
    """

    def __init__(self, url: str, context: zmq.Context | None = None,
                 server_key: bytes | str | None = None) -> None:
        self.url = url
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        if server_key:
            # CurveZMQ: an ephemeral key pair for this connection; the broker's public
            # key authenticates the broker and encrypts everything, token included.
            public, secret = zmq.curve_keypair()
            self.sock.curve_serverkey = (server_key.encode() if isinstance(server_key, str)
                                         else server_key)
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret
        for opt, value in (
            (zmq.LINGER, 0), (zmq.SNDHWM, 100_000), (zmq.RCVHWM, 100_000),
            (zmq.RECONNECT_IVL, 100), (zmq.RECONNECT_IVL_MAX, 1000),
            (zmq.HEARTBEAT_IVL, 1000), (zmq.HEARTBEAT_TIMEOUT, 3000),
            (zmq.HEARTBEAT_TTL, 3000),
        ):
            self.sock.setsockopt(opt, value)
        self.monitor = self.sock.get_monitor_socket(UP | DOWN)
        self.connected = False
        self.sock.connect(url)
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)
        self.poller.register(self._wake_fd, zmq.POLLIN)

    def _watch(self) -> None:
        """Take the monitor's news of the connection (never blocks)."""
        while self.monitor.getsockopt(EVENTS) & POLLIN:
            event = recv_monitor_message(self.monitor)["event"]
            if event == UP:
                self.connected = True
            elif event == DOWN:
                self.connected = False

    def send(self, frames: Sequence[Any]) -> bool:
        self._watch()
        if not self.connected:
            return False
        try:
            send_frames(self.sock, frames, NOBLOCK)
            return True
        except zmq.Again:
            return False

    def recv(self, timeout: float) -> list[Any] | None:
        # Asked first, not tried: a zmq.Again costs pyzmq ~6 us to build, twice a call.
        if self.sock.getsockopt(EVENTS) & POLLIN:
            return recv_frames(self.sock, NOBLOCK, 5)
        if timeout <= 0:
            return None
        events = dict(self.poller.poll(timeout * 1000))
        if events.get(self.monitor):
            self._watch()
        if events.get(self._wake_fd):
            try:
                os.eventfd_read(self._wake_fd)
            except BlockingIOError:
                pass
        if events.get(self.sock):
            try:
                return recv_frames(self.sock, NOBLOCK, 5)
            except zmq.Again:
                return None
        return None

    def wake(self) -> None:
        try:
            os.eventfd_write(self._wake_fd, 1)
        except (BlockingIOError, OSError):
            pass  # saturated (awake anyway) or closed

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        # A moment for cancels sent just before closing to leave; never longer.
        self.sock.close(linger=500)
        try:
            os.close(self._wake_fd)
        except OSError:
            pass
