"""Batched ``map``: many items per remote call, sized from how long the items take.

A remote call costs a few hundred microseconds of messaging whatever the function does;
for a function that takes microseconds, that cost is the whole run. ``Client.map`` sends
the items in batches instead: one call runs :func:`run_batch` over a list of argument
tuples on the server. How many items go in a batch adapts as in joblib's
``batch_size="auto"``: the first items go one per call (nothing is known yet); each
finished batch reports how long its items took *on the worker* (transport and queueing
excluded), and later batches are sized so that one runs for about
:data:`TARGET_SECONDS`. Slow functions therefore keep one item per call, and so keep
every worker busy, while fast ones are amortized.

Pure code: :func:`run_batch` runs inside the worker (shipped by reference, so the server
must have this module), :class:`BatchSizer` in the client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

#: How long one batch should run on the worker: long enough that messaging is a few
#: percent of it, short enough that a batch does not hold up a worker for long.
TARGET_SECONDS = 0.02
#: Most items in one batch (bounds the size of one message and of a lost batch).
MAX_BATCH = 256
#: Weight of the newest measurement in the running per-item estimate.
SMOOTHING = 0.5


def run_batch(
    fn: Callable[..., Any], arg_tuples: Sequence[tuple[Any, ...]]
) -> Iterator[tuple[float, list[Any], int | None]]:
    """Call ``fn(*args)`` for each tuple in order; yield once ``(seconds, results,
    failed)`` where ``results`` are the values of the items that ran and ``failed`` is
    the index of the item that raised (None if none did). After a failure the
    exception is raised (the worker reports it as the call's error); later items do
    not run, as a ``for`` loop would stop."""
    results: list[Any] = []
    started = time.perf_counter()
    try:
        for args in arg_tuples:
            results.append(fn(*args))
    except BaseException:
        yield time.perf_counter() - started, results, len(results)
        raise
    yield time.perf_counter() - started, results, None


class BatchSizer:
    """Chooses the size of the next batch from the items measured so far.

    ``fixed`` pins the size (``batch_size=N``); otherwise (``"auto"``) the size is 1
    until a batch has been measured, then ``TARGET_SECONDS`` divided by the smoothed
    per-item time, between 1 and ``cap``.
    """

    def __init__(self, fixed: int | None = None, *, cap: int = MAX_BATCH,
                 target: float = TARGET_SECONDS) -> None:
        if fixed is not None and fixed < 1:
            raise ValueError(f"batch_size must be at least 1, not {fixed}")
        if cap < 1:
            raise ValueError(f"the batch cap must be at least 1, not {cap}")
        self.fixed = fixed
        self.cap = cap
        self.target = target
        #: Smoothed seconds per item on the worker; None until the first measurement.
        self.per_item: float | None = None

    @property
    def measured(self) -> bool:
        return self.fixed is not None or self.per_item is not None

    def record(self, items: int, seconds: float) -> None:
        """A batch of ``items`` items ran for ``seconds`` on the worker."""
        if items <= 0 or seconds < 0:
            return
        sample = seconds / items
        self.per_item = sample if self.per_item is None else (
            SMOOTHING * sample + (1 - SMOOTHING) * self.per_item)

    def next_size(self) -> int:
        """How many items the next batch should carry."""
        if self.fixed is not None:
            return self.fixed
        if self.per_item is None:
            return 1
        if self.per_item <= 0:
            return self.cap
        return max(1, min(self.cap, int(self.target / self.per_item)))
