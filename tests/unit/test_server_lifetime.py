"""When a per-user server stops and when it may exit (zexec.core.server.lifetime), on
made-up times."""

from __future__ import annotations

from zexec.core.server.lifetime import Lifetime


def test_idle_only_without_calls_and_past_the_timeout():
    life = Lifetime(idle_timeout=60.0, drain_timeout=10.0, now=0.0)
    assert not life.idle(60.0, busy=False)
    assert not life.idle(61.0, busy=True)
    assert life.idle(61.0, busy=False)
    life.active(30.0)  # a call came
    assert not life.idle(61.0, busy=False) and life.idle(90.5, busy=False)
    never = Lifetime(idle_timeout=0.0, drain_timeout=10.0, now=0.0)
    assert not never.idle(1e9, busy=False)


def test_draining_waits_for_the_calls_up_to_the_drain_timeout():
    life = Lifetime(idle_timeout=0.0, drain_timeout=10.0, now=0.0)
    life.stop()
    assert life.stopping
    assert life.begin(100.0, settle=0.0)  # the first round: tell the broker
    assert not life.begin(100.1, settle=0.0)
    assert not life.may_exit(100.1, busy=True)
    assert life.may_exit(105.0, busy=False)  # the calls ended
    assert life.may_exit(110.0, busy=True)  # or the drain timeout passed


def test_a_direct_server_settles_before_it_trusts_that_no_call_runs():
    life = Lifetime(idle_timeout=0.0, drain_timeout=10.0, now=0.0)
    life.stop()
    life.begin(100.0, settle=0.2)
    assert not life.may_exit(100.1, busy=False)
    assert life.may_exit(100.2, busy=False)


def test_a_stop_without_draining_exits_at_once():
    life = Lifetime(idle_timeout=0.0, drain_timeout=10.0, now=0.0)
    life.stop(drain=False)  # the broker refused this server
    life.begin(100.0, settle=0.2)
    assert life.may_exit(100.0, busy=True)
