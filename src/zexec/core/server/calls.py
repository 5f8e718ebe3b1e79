"""The calls a per-user server holds: waiting in order, running on a worker, and when
each must end (its timeout), on an explicit clock.

No sockets and no processes: the server loop asks what to do and does it (hand the next
waiting call to an idle worker, stop the worker of a call that expired, fail a call), so
these rules are tested on their own with made-up times.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Key = tuple[bytes, bytes]  # (client id, call key): a call as the broker names it


@dataclass(eq=False)
class Task:
    key: bytes  # the server's own name of the call, on its worker channel
    client_id: bytes
    call_key: bytes
    legacy: bool
    frames: list[Any]  # what the worker receives
    deadline: float | None
    timeout: float | None
    worker: Any = None
    sent: int = 0  # events forwarded so far, so the server's own events continue the seq
    #: Dispatched to a worker that sends its events straight to the broker: the server
    #: does not know how many there were, so an event of its own carries seq 0.
    direct: bool = False
    #: Given to the worker by the broker (direct dispatch): the broker ends it.
    from_broker: bool = False

    @property
    def call(self) -> Key:
        return self.client_id, self.call_key

    def own_seq(self) -> int:
        """The seq of an event the server itself adds to this call's stream."""
        return 0 if self.direct else self.sent + 1


class Calls:
    """The server's calls by task key and by (client, call key), the waiting ones in
    arrival order, and the earliest deadline (so a tick finds nothing to do cheaply)."""

    def __init__(self) -> None:
        self.queue: deque[Task] = deque()
        self.tasks: dict[bytes, Task] = {}
        self.by_call: dict[Key, Task] = {}
        self._keys = itertools.count(1)
        self.next_deadline = float("inf")

    def new(self, client_id: bytes, call_key: bytes, legacy: bool, **fields: Any) -> Task:
        """A task with a fresh key, not yet held (see :meth:`enqueue`, :meth:`track`)."""
        fields.setdefault("frames", [])
        fields.setdefault("deadline", None)
        fields.setdefault("timeout", None)
        return Task(next(self._keys).to_bytes(8, "big"), client_id, call_key, legacy,
                    **fields)

    def __contains__(self, call: Key) -> bool:
        return call in self.by_call

    def find(self, call: Key) -> Task | None:
        return self.by_call.get(call)

    def get(self, key: bytes) -> Task | None:
        return self.tasks.get(key)

    def enqueue(self, task: Task, now: float) -> None:
        """Hold ``task`` and let it wait for a worker; its timeout counts from ``now``."""
        if task.timeout is not None:
            task.deadline = now + task.timeout
            self.next_deadline = min(self.next_deadline, task.deadline)
        self.track(task)
        self.queue.append(task)

    def track(self, task: Task) -> None:
        """Hold a task that is already running (a call the broker gave a worker)."""
        self.tasks[task.key] = task
        self.by_call[task.call] = task

    def next_waiting(self) -> Task | None:
        return self.queue.popleft() if self.queue else None

    def put_back(self, task: Task) -> None:
        """A task that could not be handed to a worker waits first in line again."""
        self.queue.appendleft(task)

    def unqueue(self, task: Task) -> None:
        """Take a waiting task out of line (it is ending before it ran)."""
        self.queue.remove(task)

    def forget(self, task: Task) -> None:
        self.tasks.pop(task.key, None)
        self.by_call.pop(task.call, None)

    def expired(self, now: float) -> Iterator[Task]:
        """The tasks whose deadline has passed (a waiting one is taken out of line; the
        caller stops a running one's worker and ends each)."""
        if now < self.next_deadline:
            return  # the common case, decided without walking the tasks
        self.next_deadline = float("inf")
        for task in list(self.tasks.values()):
            if task.deadline is not None and now >= task.deadline:
                if task.worker is None and task in self.queue:
                    self.queue.remove(task)
                yield task
            elif task.deadline is not None:
                self.next_deadline = min(self.next_deadline, task.deadline)

    @property
    def waiting(self) -> int:
        return len(self.queue)

    @property
    def running(self) -> int:
        return len(self.tasks) - len(self.queue)

    def __len__(self) -> int:
        return len(self.tasks)

    def all(self) -> list[Task]:
        return list(self.tasks.values())
