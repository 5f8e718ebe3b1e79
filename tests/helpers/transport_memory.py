"""In-memory fake of the :class:`~zexec.core.ports.Transport` port, for unit tests.

``InMemoryTransport.pair()`` gives two connected ends. Each end records what was sent
through it (``sent``) so tests assert on state. ``connected = False`` makes ``send``
refuse, like a DEALER with no live connection.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import Any


class InMemoryTransport:
    def __init__(self) -> None:
        self.peer: InMemoryTransport | None = None
        self.inbox: deque[list[Any]] = deque()
        self.sent: list[list[Any]] = []
        self.connected = True
        self.closed = False
        self._cond = threading.Condition()
        self._woken = False

    @classmethod
    def pair(cls) -> tuple[InMemoryTransport, InMemoryTransport]:
        a, b = cls(), cls()
        a.peer, b.peer = b, a
        return a, b

    def send(self, frames: Sequence[Any]) -> bool:
        if self.closed:
            raise RuntimeError("transport is closed")
        if not self.connected or self.peer is None:
            return False
        message = [bytes(f) for f in frames]
        self.sent.append(message)
        self.peer.deliver(message)
        return True

    def deliver(self, message: list[Any]) -> None:
        with self._cond:
            self.inbox.append(message)
            self._cond.notify_all()

    def recv(self, timeout: float) -> list[Any] | None:
        with self._cond:
            if not self.inbox and not self._woken and timeout > 0:
                self._cond.wait(timeout)
            self._woken = False
            return self.inbox.popleft() if self.inbox else None

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        self.closed = True
