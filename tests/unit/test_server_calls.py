"""The per-user server's call bookkeeping (zexec.core.server.calls) on made-up times."""

from __future__ import annotations

from zexec.core.server.calls import Calls

C1, C2 = b"client-1", b"client-2"


def test_calls_wait_in_arrival_order_and_are_found_by_both_names():
    calls = Calls()
    a, b = calls.new(C1, b"k1", False), calls.new(C2, b"k2", True)
    assert a.key != b.key
    calls.enqueue(a, now=0.0)
    calls.enqueue(b, now=0.0)
    assert (C1, b"k1") in calls and calls.find((C2, b"k2")) is b and calls.get(a.key) is a
    assert (calls.waiting, calls.running, len(calls)) == (2, 0, 2)
    assert calls.next_waiting() is a
    a.worker = "w1"
    assert (calls.waiting, calls.running) == (1, 1)
    calls.put_back(a)  # could not be handed over: first in line again
    assert calls.next_waiting() is a


def test_a_timeout_counts_from_arrival_and_expires_waiting_and_running_calls():
    calls = Calls()
    running = calls.new(C1, b"k1", False, timeout=5.0)
    waiting = calls.new(C1, b"k2", False, timeout=2.0)
    forever = calls.new(C1, b"k3", False)
    for t in (running, waiting, forever):
        calls.enqueue(t, now=10.0)
    assert calls.next_waiting() is running
    running.worker = "w1"
    assert list(calls.expired(11.9)) == []
    assert list(calls.expired(12.0)) == [waiting]
    calls.forget(waiting)  # the loop ends each expired call
    assert calls.waiting == 1  # the expired one left the line; forever still waits
    assert calls.next_deadline == 15.0
    assert list(calls.expired(14.0)) == []  # nothing due: decided without a walk
    assert list(calls.expired(15.0)) == [running]
    assert calls.next_deadline == float("inf")


def test_forgetting_a_call_and_the_seq_of_the_server_s_own_events():
    calls = Calls()
    t = calls.new(C1, b"k1", False)
    calls.enqueue(t, now=0.0)
    assert t.own_seq() == 1
    t.sent = 3
    assert t.own_seq() == 4
    t.direct = True  # its events went to the broker: the server does not know the count
    assert t.own_seq() == 0
    calls.unqueue(t)
    calls.forget(t)
    assert not calls and (C1, b"k1") not in calls


def test_a_call_the_broker_gave_a_worker_is_tracked_without_waiting():
    calls = Calls()
    t = calls.new(C1, b"k1", False, worker="w1", direct=True, from_broker=True)
    calls.track(t)
    assert (calls.waiting, calls.running) == (0, 1)
    assert calls.all() == [t]
