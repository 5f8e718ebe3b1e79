"""Token checks are served per source in turn, bounded per source."""

from zexec.core.fairqueue import FairQueue


def test_sources_take_turns_whatever_their_backlog():
    q = FairQueue(per_source=100)
    for i in range(50):
        q.push("flood", f"f{i}")
    q.push("alice", "a0")
    q.push("bob", "b0")
    order = [q.pop()[1] for _ in range(5)]
    assert order == ["f0", "a0", "b0", "f1", "f2"]
    assert len(q) == 47


def test_a_source_holds_at_most_its_share_waiting_or_running():
    q = FairQueue(per_source=2)
    assert q.push("x", 1) and q.push("x", 2)
    assert not q.push("x", 3)
    assert q.pop() == ("x", 1)
    assert q.pending("x") == 2 and not q.push("x", 3)  # one waiting, one running
    q.done("x")
    assert q.push("x", 3)
    assert q.push("y", 1)


def test_empty_queue_pops_none_and_done_is_idempotent_at_zero():
    q = FairQueue(per_source=1)
    assert q.pop() is None
    q.done("nobody")
    assert q.pending("nobody") == 0
