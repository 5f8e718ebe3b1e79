"""Batched map's pure parts: the batch runner and the adaptive sizer."""

from __future__ import annotations

import pytest

from zexec.core.batching import BatchSizer, run_batch


def test_run_batch_yields_every_value_in_order():
    [(seconds, values, failed)] = list(run_batch(lambda a, b: a * b, [(1, 2), (3, 4), (5, 6)]))
    assert values == [2, 12, 30] and failed is None and seconds >= 0


def test_run_batch_reports_the_values_before_a_failure_then_raises_it():
    ran = []

    def f(x):
        ran.append(x)
        if x == 2:
            raise KeyError(x)
        return -x

    gen = run_batch(f, [(0,), (1,), (2,), (3,)])
    seconds, values, failed = next(gen)
    assert values == [0, -1] and failed == 2
    with pytest.raises(KeyError):
        next(gen)
    assert ran == [0, 1, 2]  # a later item does not run after a failure


def test_auto_sizer_sends_one_until_measured_then_fills_the_target():
    sizer = BatchSizer(cap=256, target=0.02)
    assert not sizer.measured and sizer.next_size() == 1
    sizer.record(1, 0.0001)  # 100 us an item -> 200 fill 20 ms
    assert sizer.measured and sizer.next_size() == 200
    sizer.record(10, 0.000001)  # much faster now: capped
    assert sizer.next_size() == 256


def test_auto_sizer_keeps_slow_functions_one_per_call():
    sizer = BatchSizer(cap=256, target=0.02)
    sizer.record(1, 1.5)
    assert sizer.next_size() == 1
    sizer.record(4, 0.0)  # an instant batch moves the estimate, smoothed, not at once
    assert sizer.next_size() == 1
    assert sizer.per_item == pytest.approx(0.75)


def test_fixed_size_and_bad_sizes():
    assert BatchSizer(7).next_size() == 7 and BatchSizer(7).measured
    with pytest.raises(ValueError):
        BatchSizer(0)
    with pytest.raises(ValueError):
        BatchSizer(cap=0)
