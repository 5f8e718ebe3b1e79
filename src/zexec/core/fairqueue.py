"""A queue that serves its sources in turn: one source's flood waits behind itself.

The broker queues token checks here by source address: a peer that sends a thousand
unknown tokens gets one check per round like everyone else, and at most ``per_source``
of its checks may be waiting or running at once (the rest are refused), so a flood of
random tokens costs the identity provider and other users little. Pure: no threads, no
clock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self, per_source: int) -> None:
        self.per_source = per_source
        self._queues: OrderedDict[Any, deque[T]] = OrderedDict()  # sources in turn order
        self._running: dict[Any, int] = {}
        self._len = 0

    def __len__(self) -> int:
        """Items waiting (not running)."""
        return self._len

    def pending(self, source: Any) -> int:
        """Items of ``source`` waiting or running."""
        q = self._queues.get(source)
        return (len(q) if q else 0) + self._running.get(source, 0)

    def push(self, source: Any, item: T) -> bool:
        """Queue ``item``; False (not queued) if ``source`` has ``per_source`` pending."""
        if self.pending(source) >= self.per_source:
            return False
        q = self._queues.get(source)
        if q is None:
            q = self._queues[source] = deque()
        q.append(item)
        self._len += 1
        return True

    def pop(self) -> tuple[Any, T] | None:
        """The next item, from the source whose turn it is (then it goes last); the item
        counts as running for its source until :meth:`done`."""
        if not self._queues:
            return None
        source, q = next(iter(self._queues.items()))
        item = q.popleft()
        self._len -= 1
        if q:
            self._queues.move_to_end(source)
        else:
            del self._queues[source]
        self._running[source] = self._running.get(source, 0) + 1
        return source, item

    def done(self, source: Any) -> None:
        """An item of ``source`` taken by :meth:`pop` finished."""
        left = self._running.get(source, 0) - 1
        if left > 0:
            self._running[source] = left
        else:
            self._running.pop(source, None)
