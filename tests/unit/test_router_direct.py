"""Direct dispatch in the broker's routing state machine: calls go to a direct server's
idle workers, wait here for one, and end here on cancel, timeout or a worker's death.

Driven with frames and a fake clock, as in test_router.py; assertions are on what the
broker sends and on its state.
"""

from __future__ import annotations

import pickle

from tests.helpers.router import (
    ALICE,
    BOB,
    CLI,
    CLI2,
    ID1,
    ID2,
    ID3,
    REST,
    SRV_A,
    SRV_B,
    T_ALICE,
    T_BOB,
    back,
    call,
    cancel,
    client_event,
    cred,
    front,
    legacy_call,
    login,
    make,
    register,
    take,
)
from zexec.core import protocol as p
from zexec.core.broker.router import BACK, BYE_GRACE, FRONT, Router

W1, W2, W_BOB, STRANGER = b"w-alice-1", b"w-alice-2", b"w-bob-1", b"stranger"
DIRECT = {"direct": True}


def direct_ready(workers: tuple[bytes, ...] = (W1,), **kw) -> Router:
    """alice (direct server with ``workers`` announced) and bob (direct, no workers)."""
    r = make(**kw)
    login(r, T_ALICE, ALICE, 0.0)
    login(r, T_BOB, BOB, 0.0)
    assert register(r, SRV_A, ALICE, 0.0, info=DIRECT) == {"ok": True}
    assert register(r, SRV_B, BOB, 0.0, info=DIRECT) == {"ok": True}
    for w in workers:
        ready(r, w)
    return r


def ready(r: Router, worker: bytes, user: str = "alice-id", credential: str = "",
          now: float = 0.1) -> None:
    back(r, worker, p.worker_ready(user, credential or cred(user)), now)


def wreply(r: Router, worker: bytes, client: bytes, call_id: bytes, final: bool, body: list,
           now: float = 1.5, user: str = "alice-id") -> None:
    back(r, worker, p.worker_reply(user, cred(user), client, call_id, final, body), now)


def sent_to(out: list, dest_rid: bytes) -> list[list]:
    return [frames for dest, frames in out if dest == BACK and frames[0] == dest_rid]


def test_a_call_goes_to_an_idle_worker_not_to_the_server():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    (dest, frames), = take(r)
    assert dest == BACK and frames[0] == W1
    msg = p.parse_server_bound(frames[2:])
    assert (msg.verb, msg.client_id, msg.call_key, msg.user_id) == (p.CALL, CLI, ID1, "alice-id")
    assert msg.rest == REST  # forwarded untouched, without the token
    assert r.inflight[(CLI, ID1)].worker_rid == W1 and r.servers["alice-id"].idle == []


def test_the_final_event_frees_the_worker_for_the_next_call():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    ret = p.v1_event(ID1, "return", 1, None, [b"value"])
    wreply(r, W1, CLI, ID1, True, ret)
    (dest, frames), = take(r)
    assert dest == FRONT and frames == [CLI, b"", *ret]
    assert r.inflight == {} and r.servers["alice-id"].idle == [W1]
    front(r, CLI, call(T_ALICE, ID2), 2.0)
    (dest, frames), = take(r)
    assert frames[0] == W1


def test_a_big_reply_is_announced_to_a_v1_client_first():
    from zexec.core.broker.backend import ANNOUNCE_BYTES

    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    small = p.v1_event(ID1, "yield", 1, None, [b"x" * 100])
    wreply(r, W1, CLI, ID1, False, small)
    assert [f for _, f in take(r)] == [[CLI, b"", *small]]  # small: as it is
    big = p.v1_event(ID1, "return", 2, None, [bytes(ANNOUNCE_BYTES)])
    wreply(r, W1, CLI, ID1, True, big)
    (d1, notice), (d2, frames) = take(r)
    assert d1 == d2 == FRONT and frames == [CLI, b"", *big]
    assert p.parse_client_bound(notice[2:]) == {"incoming": sum(len(f) for f in big)}
    assert r.inflight == {}


def test_a_big_reply_to_a_legacy_client_is_not_announced():
    from zexec.core.broker.backend import ANNOUNCE_BYTES

    r = direct_ready()
    front(r, CLI, legacy_call(T_ALICE), 1.0)
    take(r)
    end = [p.legacy_payload(p.legacy_event("END", 3)), bytes(ANNOUNCE_BYTES),
           b"", b"", b""]  # a big legacy reply: the released clients know no PONG
    wreply(r, W1, CLI, b"", True, end)
    assert [f for _, f in take(r)] == [[CLI, b"", *end]]


def test_calls_wait_for_a_free_worker_in_arrival_order():
    r = direct_ready()
    for i, cid in enumerate((ID1, ID2, ID3)):
        front(r, CLI, call(T_ALICE, cid), 1.0 + i / 10)
    assert [f[0] for _, f in take(r)] == [W1]  # the others wait here
    assert list(r.servers["alice-id"].queued) == [(CLI, ID2), (CLI, ID3)]
    assert r.status()["servers"]["alice-id"]["queued"] == 2
    wreply(r, W1, CLI, ID1, True, p.v1_event(ID1, "return", 1))
    out = take(r)
    assert [f[0] for _, f in out] == [CLI, W1]
    assert p.parse_server_bound(out[1][1][2:]).call_key == ID2
    ready(r, W2)  # a new worker takes the next one at once
    (dest, frames), = take(r)
    assert frames[0] == W2 and p.parse_server_bound(frames[2:]).call_key == ID3
    assert r.servers["alice-id"].queued == {} and r.servers["alice-id"].queued_bytes == 0


def test_a_worker_needs_the_users_credential_and_a_registered_direct_server():
    r = direct_ready(workers=())
    ready(r, STRANGER, credential=cred("bob-id"))  # bob's credential for alice
    ready(r, W_BOB, user="carol-id")  # carol has no server
    assert r.workers == {} and r.stats["bad_worker_ready"] == 1
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    assert take(r) == [] and (CLI, ID1) in r.servers["alice-id"].queued


def test_a_server_that_is_not_direct_gets_the_calls_and_no_workers():
    r = make()
    login(r, T_ALICE, ALICE, 0.0)
    register(r, SRV_A, ALICE, 0.0)
    ready(r, W1)
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    (dest, frames), = take(r)
    assert frames[0] == SRV_A and r.workers == {}


def test_another_ready_from_a_busy_worker_does_not_free_it():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    ready(r, W1, now=1.2)  # sent before it read the call
    front(r, CLI, call(T_ALICE, ID2), 1.3)
    assert take(r) == [] and (CLI, ID2) in r.servers["alice-id"].queued


def test_events_of_a_dispatched_call_are_taken_only_from_its_worker():
    r = direct_ready((W1, W2))
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    (_, frames), = take(r)
    runner, other = frames[0], ({W1, W2} - {frames[0]}).pop()
    wreply(r, other, CLI, ID1, True, p.v1_event(ID1, "return", 1))
    assert take(r) == [] and (CLI, ID1) in r.inflight
    wreply(r, runner, CLI, ID1, True, p.v1_event(ID1, "return", 1))
    assert [f[0] for _, f in take(r)] == [CLI]


def test_cancel_of_a_running_call_answers_the_client_and_kills_its_worker():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    front(r, CLI, cancel(T_ALICE, ID1, b"user pressed ctrl-c"), 1.1)
    out = take(r)
    ev = client_event(next(f for d, f in out if d == FRONT))
    assert (ev.kind, ev.seq, ev.header["reason"]) == ("cancelled", 0, "user pressed ctrl-c")
    assert sent_to(out, SRV_A) == [[SRV_A, *p.kill(W1)]]
    assert r.inflight == {} and r.workers == {} and r.servers["alice-id"].idle == []
    # Its last events are dropped, and it never gets another call.
    wreply(r, W1, CLI, ID1, True, p.v1_event(ID1, "return", 1), now=1.2)
    front(r, CLI, call(T_ALICE, ID2), 1.3)
    assert take(r) == [] and (CLI, ID2) in r.servers["alice-id"].queued


def test_cancel_of_a_queued_call_just_unqueues_it():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    front(r, CLI, call(T_ALICE, ID2), 1.0)
    take(r)
    front(r, CLI, cancel(T_ALICE, ID2), 1.1)
    (dest, frames), = take(r)
    assert dest == FRONT and client_event(frames).kind == "cancelled"
    assert r.servers["alice-id"].queued == {} and r.servers["alice-id"].queued_bytes == 0
    assert set(r.inflight) == {(CLI, ID1)}


def test_cancel_from_another_user_or_connection_is_ignored():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    front(r, CLI2, cancel(T_ALICE, ID1), 1.1)
    front(r, CLI, cancel(T_BOB, ID1), 1.1)
    assert take(r) == [] and r.inflight[(CLI, ID1)].worker_rid == W1


def test_a_timeout_ends_the_call_here_and_kills_its_worker():
    r = direct_ready()
    header = p.dump_header({"ser": "dill", "py": "3.11", "timeout": 0.5})
    front(r, CLI, call(T_ALICE, ID1, [header, b"fn", b"args"]), 1.0)
    take(r)
    assert r.next_deadline == 1.5
    r.tick(1.4)
    assert take(r) == []
    r.tick(1.5)
    out = take(r)
    ev = client_event(next(f for d, f in out if d == FRONT))
    assert ev.header["code"] == "DEADLINE_EXCEEDED" and ev.header["type"] == "TimeoutError"
    assert "0.5s" in ev.header["message"]
    assert sent_to(out, SRV_A) == [[SRV_A, *p.kill(W1)]]
    assert r.inflight == {} and r.next_deadline == float("inf")


def test_a_call_that_ends_in_time_is_not_expired():
    r = direct_ready()
    header = p.dump_header({"ser": "dill", "py": "3.11", "timeout": 0.5})
    front(r, CLI, call(T_ALICE, ID1, [header, b"fn", b"args"]), 1.0)
    take(r)
    wreply(r, W1, CLI, ID1, True, p.v1_event(ID1, "return", 1), now=1.2)
    take(r)
    r.tick(2.0)
    assert take(r) == [] and r.servers["alice-id"].idle == [W1]


def test_a_queued_call_can_expire_before_it_runs():
    r = direct_ready(workers=())
    header = p.dump_header({"ser": "dill", "py": "3.11", "timeout": 1})
    front(r, CLI, call(T_ALICE, ID1, [header, b"fn", b"args"]), 1.0)
    r.tick(2.0)
    (dest, frames), = take(r)
    assert client_event(frames).header["code"] == "DEADLINE_EXCEEDED"
    assert r.servers["alice-id"].queued == {}


def test_a_bad_call_header_is_refused_here():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1, [b"not json", b"fn", b"args"]), 1.0)
    (dest, frames), = take(r)
    assert dest == FRONT and client_event(frames).header["code"] == "BAD_REQUEST"
    assert r.inflight == {} and r.servers["alice-id"].idle == [W1]


def test_a_worker_death_fails_its_call_and_it_is_forgotten():
    r = direct_ready((W1, W2))
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    (_, frames), = take(r)
    runner = frames[0]
    back(r, SRV_B, p.worker_gone(runner, 9), 1.1)  # not bob's worker: ignored
    assert take(r) == []
    back(r, SRV_A, p.worker_gone(runner, 9), 1.2)
    (dest, frames), = take(r)
    ev = client_event(frames)
    assert ev.header["code"] == "WORKER_DIED" and "exited with status 9" in ev.header["message"]
    assert runner not in r.workers and r.inflight == {}


def test_a_killed_workers_death_report_changes_nothing():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    front(r, CLI, cancel(T_ALICE, ID1), 1.1)
    take(r)
    back(r, SRV_A, p.worker_gone(W1, -9), 1.2)
    assert take(r) == []


def test_a_stopping_server_gets_no_new_calls_and_its_queue_fails():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    front(r, CLI, call(T_ALICE, ID2), 1.0)
    take(r)
    back(r, SRV_A, p.register("alice-id", cred("alice-id"), {"direct": True,
                                                              "stopping": True}), 1.1)
    out = take(r)
    failed = [client_event(f) for d, f in out if d == FRONT]
    assert [(e.call_id, e.header["code"]) for e in failed] == [(ID2, "SHUTTING_DOWN")]
    front(r, CLI, call(T_ALICE, ID3), 1.2)
    (dest, frames), = take(r)
    assert client_event(frames).header["code"] == "SHUTTING_DOWN"
    assert set(r.inflight) == {(CLI, ID1)}  # the running call finishes


def test_too_many_queued_bytes_get_busy():
    r = direct_ready(workers=(), max_queued_bytes=100)
    front(r, CLI, call(T_ALICE, ID1, [b"{}", b"f", b"x" * 60]), 1.0)
    front(r, CLI, call(T_ALICE, ID2, [b"{}", b"f", b"x" * 60]), 1.0)
    (dest, frames), = take(r)
    assert client_event(frames).call_id == ID2 and client_event(frames).header["code"] == "BUSY"
    assert list(r.servers["alice-id"].queued) == [(CLI, ID1)]


def test_server_loss_fails_queued_calls_and_forgets_its_workers():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    front(r, CLI, call(T_ALICE, ID2), 1.0)
    take(r)
    r.tick(3.5)  # no heartbeat for 2.5 s > ttl
    codes = {client_event(f).call_id: client_event(f).header["code"] for _, f in take(r)}
    assert codes == {ID1: "SERVER_GONE", ID2: "SERVER_GONE"}
    assert r.workers == {} and r.inflight == {}
    ready(r, W1, now=3.6)  # a worker of the lost server, no server now
    assert r.workers == {}


def test_bye_gives_running_calls_a_grace_and_fails_queued_ones_now():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    front(r, CLI, call(T_ALICE, ID2), 1.0)
    take(r)
    back(r, SRV_A, [b"", p.MAGIC, p.BYE], 1.1)
    (dest, frames), = take(r)
    assert client_event(frames).call_id == ID2
    ret = p.v1_event(ID1, "return", 1)
    wreply(r, W1, CLI, ID1, True, ret, now=1.1 + BYE_GRACE / 2)
    (dest, frames), = take(r)
    assert frames == [CLI, b"", *ret] and r.inflight == {}


def test_a_final_event_from_the_server_retires_the_worker():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    body = p.v1_error(ID1, "SHUTTING_DOWN", "the server shut down before the call ended")
    back(r, SRV_A, p.reply(CLI, ID1, True, body), 1.1)
    (dest, frames), = take(r)
    assert frames == [CLI, b"", *body] and r.workers == {}


def test_legacy_calls_are_dispatched_directly_too():
    r = direct_ready()
    front(r, CLI, legacy_call(T_ALICE), 1.0)
    (dest, frames), = take(r)
    msg = p.parse_server_bound(frames[2:])
    assert frames[0] == W1 and msg.verb == p.LEGACY_CALL and msg.rest == [b"dill-fn", b"dill-args"]
    end = [p.legacy_payload(p.legacy_event("END", 3))]
    wreply(r, W1, CLI, b"", True, end)
    (dest, frames), = take(r)
    assert pickle.loads(frames[2])["type"] == "END" and r.servers["alice-id"].idle == [W1]


def test_a_second_call_with_a_running_call_id_is_refused():
    r = direct_ready((W1, W2))
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    (_, frames), = take(r)
    runner, other = frames[0], ({W1, W2} - {frames[0]}).pop()
    front(r, CLI, call(T_ALICE, ID1), 1.1)
    (dest, frames), = take(r)
    assert dest == FRONT and client_event(frames).header["code"] == "BAD_REQUEST"
    assert r.inflight[(CLI, ID1)].worker_rid == runner and r.servers["alice-id"].idle == [other]
    front(r, CLI, legacy_call(T_ALICE), 1.2)
    front(r, CLI, legacy_call(T_ALICE), 1.3)  # one legacy call per connection at a time
    out = take(r)
    assert [f[0] for _, f in out] == [other, CLI]
    assert pickle.loads(out[1][1][2]) == "A call is already running on this connection."


def test_a_workers_final_event_frees_it_even_when_its_call_is_gone():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    del r.inflight[(CLI, ID1)]  # as if the client's connection state were lost
    wreply(r, W1, CLI, ID1, True, p.v1_event(ID1, "return", 1))
    assert take(r) == [] and r.servers["alice-id"].idle == [W1]
    back(r, W1, p.worker_reply("alice-id", "forged", CLI, ID1, True, []), 1.6)
    assert r.stats["bad_worker_reply"] == 0  # not its call: not even checked


def test_a_call_that_cannot_reach_its_worker_goes_to_the_next_one():
    r = direct_ready((W1, W2))
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    (dest, frames), = take(r)
    lost, other = frames[0], ({W1, W2} - {frames[0]}).pop()
    r.on_undeliverable(frames)  # the socket loop: that worker's connection is gone
    out = take(r)
    assert sent_to(out, SRV_A) == [[SRV_A, *p.kill(lost)]]
    (redo,) = sent_to(out, other)
    assert redo[1:] == frames[1:] and r.inflight[(CLI, ID1)].worker_rid == other
    assert lost not in r.workers and r.servers["alice-id"].queued == {}


def test_an_undeliverable_call_waits_for_a_worker_when_none_is_idle():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    front(r, CLI, call(T_ALICE, ID2), 1.0)
    (dest, frames), = take(r)
    r.on_undeliverable(frames)
    take(r)
    assert list(r.servers["alice-id"].queued) == [(CLI, ID1), (CLI, ID2)]  # first again
    ready(r, W2, now=1.1)
    (dest, frames), = take(r)
    assert frames[0] == W2 and p.parse_server_bound(frames[2:]).call_key == ID1


def test_workers_must_carry_the_prefix_their_server_registered():
    r = make()
    login(r, T_ALICE, ALICE, 0.0)
    register(r, SRV_A, ALICE, 0.0, info={"direct": True, "worker_prefix": "abc-"})
    ready(r, b"xyz-w1")  # a worker of another (old) server of alice's
    ready(r, b"abc-w1")
    assert list(r.workers) == [b"abc-w1"]


def test_a_duplicate_call_id_is_refused_also_while_the_token_is_checked():
    r = direct_ready()
    front(r, CLI, call("new-token", ID1), 1.0)
    front(r, CLI, call("new-token", ID1), 1.0)
    (dest, frames), = take(r)
    assert client_event(frames).header["code"] == "BAD_REQUEST"
    r.on_auth_result(r.auth_requests[0][0], ALICE, 1.1)
    (dest, frames), = take(r)
    assert frames[0] == W1 and list(r.inflight) == [(CLI, ID1)]


def test_cancel_during_the_bye_grace_is_answered_at_once():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    back(r, SRV_A, [b"", p.MAGIC, p.BYE], 1.1)
    front(r, CLI, cancel(T_ALICE, ID1), 1.2)
    (dest, frames), = take(r)
    assert dest == FRONT and client_event(frames).kind == "cancelled" and r.inflight == {}


def test_events_for_a_call_still_waiting_here_are_dropped():
    r = direct_ready(workers=())
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    wreply(r, W1, CLI, ID1, True, p.v1_event(ID1, "return", 1))  # right credential
    assert take(r) == [] and (CLI, ID1) in r.servers["alice-id"].queued


def test_a_worker_whose_connection_broke_ends_its_lost_call():
    r = direct_ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    back(r, W1, p.worker_ready("alice-id", cred("alice-id"), reconnected=True), 5.0)
    (dest, frames), = take(r)
    ev = client_event(frames)
    assert ev.call_id == ID1 and ev.header["code"] == "CALL_LOST"
    assert r.inflight == {} and r.servers["alice-id"].idle == [W1]


def test_a_final_event_from_the_server_for_a_queued_call_unqueues_it():
    r = direct_ready(workers=())
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    body = p.v1_error(ID1, "SHUTTING_DOWN", "stopping")
    back(r, SRV_A, p.reply(CLI, ID1, True, body), 1.1)
    (dest, frames), = take(r)
    assert frames == [CLI, b"", *body]
    assert r.servers["alice-id"].queued == {} and r.servers["alice-id"].queued_bytes == 0


def test_the_registration_ack_says_when_the_users_last_call_came():
    r = direct_ready()
    back(r, SRV_A, p.register("alice-id", cred("alice-id"), DIRECT), 1.0)
    (_, frames), = take(r)
    assert p.load_header(frames[4]) == {"ok": True, "last_call_ago": None}
    front(r, CLI, call(T_ALICE, ID1), 2.0)
    take(r)
    back(r, SRV_A, p.register("alice-id", cred("alice-id"), DIRECT), 2.5)
    (_, frames), = take(r)
    assert p.load_header(frames[4]) == {"ok": True, "last_call_ago": 0.5}
