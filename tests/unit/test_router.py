"""The broker's pure routing state machine, driven with frames and a fake clock.

No sockets: messages go in through ``on_frontend`` / ``on_backend`` /
``on_auth_result`` / ``tick`` with an explicit ``now``; what the broker would send is in
``router.outbox`` and the token checks it wants are in ``router.auth_requests``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers.router import (
    ALICE,
    BOB,
    CLI,
    CLI2,
    CLI_B,
    EVIL,
    ID1,
    ID2,
    ID3,
    REST,
    SRV_A,
    SRV_A2,
    SRV_B,
    T_ALICE,
    T_BAD,
    T_BOB,
    WORKER,
    back,
    call,
    cancel,
    client_event,
    cred,
    front,
    legacy_call,
    legacy_reply,
    login,
    make,
    ready,
    register,
    take,
    to_server,
)
from zexec.core import protocol as p
from zexec.core.broker import router as rmod
from zexec.core.broker.router import BACK, BYE_GRACE, FRONT, Router
from zexec.core.errors import AuthUnavailable, Forbidden, Unauthenticated
from zexec.core.tokencache import token_key

# --------------------------------------------------------------------------- auth


def test_router_requires_a_server_secret():
    with pytest.raises(ValueError):
        Router(b"")


def test_unknown_token_parks_messages_and_requests_one_check():
    r = make()
    assert register(r, SRV_A, ALICE, 0.0) == {"ok": True}
    front(r, CLI, call(T_ALICE, ID1), 0.0)
    front(r, CLI, call(T_ALICE, ID2), 0.1)
    front(r, CLI2, call(T_ALICE, ID3), 0.2)
    front(r, CLI, p.v1_ping(T_ALICE, [ID1, ID2]), 0.3)
    front(r, CLI, legacy_call(T_ALICE), 0.4)
    assert r.auth_requests == [(token_key(T_ALICE), T_ALICE)]  # one check, five messages
    assert r.outbox == []
    assert r.parked_count == 5 and r.busy
    assert r.status()["parked"] == 5

    r.auth_requests.clear()  # the loop takes them
    r.on_auth_result(token_key(T_ALICE), ALICE, 1.0)
    out = take(r)
    assert r.parked_count == 0 and not r.parked and not r.tokens
    # Replayed in arrival order: three calls to alice's server, the PONG, the legacy call.
    dests = [d for d, _ in out]
    assert dests == [BACK, BACK, BACK, FRONT, BACK]
    keys = [(to_server(f)[1].client_id, to_server(f)[1].call_key) for d, f in out if d == BACK]
    assert keys == [(CLI, ID1), (CLI, ID2), (CLI2, ID3), (CLI, b"")]
    pong = p.parse_client_bound(out[3][1][2:])
    assert pong == {"server": True, "unknown": [], "draining": False}
    assert r.auth_requests == []


def test_each_token_gets_its_own_check():
    r = make()
    front(r, CLI, call(T_ALICE, ID1), 0.0)
    front(r, CLI_B, call(T_BOB, ID1), 0.0)
    front(r, CLI, call(T_ALICE, ID2), 0.0)
    assert r.auth_requests == [(token_key(T_ALICE), T_ALICE), (token_key(T_BOB), T_BOB)]
    # A result for one token replays only that token's messages.
    r.on_auth_result(token_key(T_BOB), BOB, 1.0)
    out = take(r)
    assert len(out) == 1 and client_event(out[0][1]).header["code"] == "NO_SERVER"
    assert r.parked_count == 2


def test_raw_tokens_are_not_kept_in_router_state():
    r = make()
    front(r, CLI, call(T_ALICE, ID1), 0.0)
    assert r.auth_requests == [(token_key(T_ALICE), T_ALICE)]  # handed to the checker
    r.auth_requests.clear()
    assert T_ALICE not in repr(r.tokens) and T_ALICE not in repr(r.status())
    r.on_auth_result(token_key(T_ALICE), ALICE, 1.0)
    assert r.tokens == {} and not r.checks_by_peer


def test_one_connection_may_have_only_a_few_unknown_tokens_checked():
    r = make(max_checks_per_peer=2)
    front(r, CLI, call("t1", ID1), 0.0)
    front(r, CLI, call("t2", ID2), 0.0)
    front(r, CLI, call("t3", ID3), 0.0)  # a third distinct unknown token: refused
    front(r, CLI, call("t1", b"4" * 16), 0.0)  # a token already being checked: parked
    front(r, CLI2, call("t3", ID3), 0.0)  # another connection is not affected
    out = take(r)
    assert len(out) == 1
    ev = client_event(out[0][1])
    assert out[0][1][0] == CLI and ev.call_id == ID3 and ev.header["code"] == "BUSY"
    assert [t for _, t in r.auth_requests] == ["t1", "t2", "t3"]
    assert r.checks_by_peer == {CLI: 2, CLI2: 1}
    r.on_auth_result(token_key("t1"), Unauthenticated("no"), 0.1)
    assert r.checks_by_peer == {CLI: 1, CLI2: 1}
    front(r, CLI, call("t5", b"5" * 16), 0.2)  # room again
    assert r.auth_requests[-1] == (token_key("t5"), "t5")


def test_cached_identity_routes_at_once_until_it_expires():
    r = make()
    assert register(r, SRV_A, ALICE, 0.0) == {"ok": True}
    login(r, T_ALICE, ALICE, 0.0)
    front(r, CLI, call(T_ALICE, ID1), 10.0)
    assert r.auth_requests == []
    (dest, frames), = take(r)
    assert dest == BACK and frames[0] == SRV_A
    # positive_ttl = 60: after it, the next message is checked again.
    register(r, SRV_A, ALICE, 60.5)
    front(r, CLI, call(T_ALICE, ID2), 61.0)
    assert r.auth_requests == [(token_key(T_ALICE), T_ALICE)]
    assert take(r) == []


@pytest.mark.parametrize("outcome, code", [
    (Unauthenticated("expired"), "UNAUTHENTICATED"),
    (Forbidden("not in group"), "FORBIDDEN"),
    (AuthUnavailable("idp down"), "AUTH_UNAVAILABLE"),
])
def test_failed_checks_refuse_every_parked_message(outcome, code):
    r = make()
    front(r, CLI, call(T_BAD, ID1), 0.0)
    front(r, CLI, cancel(T_BAD, ID1), 0.0)
    front(r, CLI, p.v1_ping(T_BAD, [ID1]), 0.0)
    r.on_auth_result(token_key(T_BAD), outcome, 0.5)
    out = take(r)
    assert [d for d, _ in out] == [FRONT, FRONT, FRONT]
    evs = [client_event(f) for _, f in out]
    assert [e.call_id for e in evs] == [ID1, ID1, b""]  # a PING's refusal has no call id
    assert {e.header["code"] for e in evs} == {code}
    assert all(e.kind == "error" and e.seq == 0 for e in evs)
    assert r.inflight == {}  # the parked call's placeholder is gone
    assert r.stats["auth_failed"] == 3


def test_negative_outcomes_are_cached_for_their_ttl():
    r = make()
    login(r, T_BAD, Unauthenticated("bad"), 0.0)
    front(r, CLI, call(T_BAD, ID1), 4.9)  # negative_ttl = 5
    assert r.auth_requests == []
    (_, frames), = take(r)
    assert client_event(frames).header["code"] == "UNAUTHENTICATED"
    front(r, CLI, call(T_BAD, ID2), 5.0)
    assert r.auth_requests == [(token_key(T_BAD), T_BAD)]


def test_unavailable_outcome_is_cached_briefly():
    r = make()
    login(r, T_ALICE, AuthUnavailable("down"), 0.0)
    front(r, CLI, call(T_ALICE, ID1), 0.5)
    (_, frames), = take(r)
    assert client_event(frames).header["code"] == "AUTH_UNAVAILABLE"
    front(r, CLI, call(T_ALICE, ID2), 1.0)  # unavailable_ttl = 1
    assert r.auth_requests == [(token_key(T_ALICE), T_ALICE)]


def test_max_parked_refuses_with_busy():
    r = make(max_parked=2)
    front(r, CLI, call("t1", ID1), 0.0)
    front(r, CLI, call("t2", ID2), 0.0)
    front(r, CLI, call("t3", ID3), 0.0)
    front(r, CLI2, legacy_call("t4"), 0.0)
    out = take(r)
    assert len(out) == 2
    ev = client_event(out[0][1])
    assert ev.call_id == ID3 and ev.header["code"] == "BUSY"
    assert legacy_reply(out[1][1]) == rmod.LEGACY_BUSY == "Broker is busy; try again shortly."
    assert r.parked_count == 2
    assert [k for k, _ in r.auth_requests] == [token_key("t1"), token_key("t2")]
    # A message for an already-pending token is refused too once the limit is reached.
    front(r, CLI, call("t1", b"4" * 16), 0.0)
    assert client_event(take(r)[0][1]).header["code"] == "BUSY"


# --------------------------------------------------------------------------- routing


def test_call_goes_to_the_users_registered_server_only():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    front(r, CLI_B, call(T_BOB, ID1), 1.0)
    out = take(r)
    assert len(out) == 2
    (d1, f1), (d2, f2) = out
    assert d1 == d2 == BACK
    assert f1 == [SRV_A, b"", p.MAGIC, p.CALL, CLI, ID1, ALICE.user_id.encode(), *REST]
    assert f2[0] == SRV_B and to_server(f2)[1].user_id == BOB.user_id
    assert r.inflight[(CLI, ID1)].server_rid == SRV_A
    assert r.inflight[(CLI_B, ID1)].server_rid == SRV_B
    assert r.status()["servers"]["alice-id"]["inflight"] == 1


def test_token_frame_is_not_forwarded_to_the_server():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    (_, frames), = take(r)
    assert T_ALICE.encode() not in frames


def test_no_server_for_the_user():
    r = make()
    login(r, T_ALICE, ALICE, 0.0)
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    front(r, CLI2, legacy_call(T_ALICE), 1.0)
    out = take(r)
    ev = client_event(out[0][1])
    assert ev.header["code"] == "NO_SERVER" and "alice-id" in ev.header["message"]
    assert legacy_reply(out[1][1]) == "Server not ready/available for user alice-id."
    assert r.inflight == {}


def test_reply_is_forwarded_until_the_final_one():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    out_ev = p.v1_event(ID1, "out", 1, {"out": [["stdout", "hi\n"]]})
    back(r, SRV_A, p.reply(CLI, ID1, False, out_ev), 1.1)
    (dest, frames), = take(r)
    assert dest == FRONT and frames == [CLI, b"", *out_ev]
    assert (CLI, ID1) in r.inflight
    ret = p.v1_event(ID1, "return", 2, None, [b"value", b"oob"])
    back(r, SRV_A, p.reply(CLI, ID1, True, ret), 1.2)
    (dest, frames), = take(r)
    assert frames == [CLI, b"", *ret]
    assert r.inflight == {} and not r.busy
    # Anything after the final reply is dropped.
    back(r, SRV_A, p.reply(CLI, ID1, True, ret), 1.3)
    assert take(r) == []


def test_worker_replies_with_the_users_credential_are_forwarded_until_the_final_one():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    out_ev = p.v1_event(ID1, "out", 1, {"out": [["stdout", "hi\n"]]})
    back(r, WORKER, p.worker_reply("alice-id", cred("alice-id"), CLI, ID1, False, out_ev), 1.1)
    (dest, frames), = take(r)
    assert dest == FRONT and frames == [CLI, b"", *out_ev] and (CLI, ID1) in r.inflight
    ret = p.v1_event(ID1, "return", 2, None, [b"value"])
    back(r, WORKER, p.worker_reply("alice-id", cred("alice-id"), CLI, ID1, True, ret), 1.2)
    (dest, frames), = take(r)
    assert frames == [CLI, b"", *ret] and r.inflight == {}
    back(r, WORKER, p.worker_reply("alice-id", cred("alice-id"), CLI, ID1, True, ret), 1.3)
    assert take(r) == []


def test_worker_replies_need_the_credential_of_the_calls_user():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    ret = p.v1_event(ID1, "return", 1, None, [b"evil"])
    # A wrong credential for alice; bob's real credential for alice's call; and a
    # credential that claims bob while the call is alice's.
    back(r, WORKER, p.worker_reply("alice-id", "0" * 64, CLI, ID1, True, ret), 1.1)
    back(r, WORKER, p.worker_reply("alice-id", cred("bob-id"), CLI, ID1, True, ret), 1.1)
    back(r, WORKER, p.worker_reply("bob-id", cred("bob-id"), CLI, ID1, True, ret), 1.1)
    assert take(r) == [] and (CLI, ID1) in r.inflight
    assert r.stats["bad_worker_reply"] == 2


def test_reply_from_another_registered_server_is_dropped():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    # bob's (authenticated) server tries to answer alice's call: spoofing.
    back(r, SRV_B, p.reply(CLI, ID1, True, p.v1_event(ID1, "return", 1, None, [b"evil"])), 1.1)
    assert take(r) == []
    assert r.inflight[(CLI, ID1)].server_rid == SRV_A


def test_reply_from_an_unregistered_peer_is_dropped():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    back(r, EVIL, p.reply(CLI, ID1, True, p.v1_event(ID1, "return", 1)), 1.1)
    back(r, EVIL, [b"", p.MAGIC, p.BYE], 1.1)
    assert take(r) == []
    assert (CLI, ID1) in r.inflight and set(r.servers) == {"alice-id", "bob-id"}


def test_reply_for_a_call_that_was_never_made_is_dropped():
    r = ready()
    back(r, SRV_A, p.reply(CLI, ID1, False, p.v1_event(ID1, "out", 1)), 1.0)
    back(r, SRV_A, p.reply(CLI, b"", True, [p.legacy_payload("x")]), 1.0)
    assert take(r) == []


def test_cancel_goes_to_the_server_running_the_call():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    front(r, CLI, cancel(T_ALICE, ID1, b"keyboard_interrupt"), 1.1)
    (dest, frames), = take(r)
    srv, msg = to_server(frames)
    assert dest == BACK and srv == SRV_A
    assert msg == p.ServerBound(p.CANCEL, CLI, ID1, "alice-id", [b"keyboard_interrupt"])
    assert (CLI, ID1) in r.inflight  # ends when the server's final event comes back


def test_cancel_of_someone_elses_or_unknown_call_is_ignored():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    front(r, CLI, cancel(T_BOB, ID1), 1.1)   # same connection, another user's token
    front(r, CLI2, cancel(T_ALICE, ID1), 1.1)  # another connection
    front(r, CLI, cancel(T_ALICE, ID2), 1.1)  # no such call
    assert take(r) == []


def test_cancel_parked_behind_its_call_is_replayed_after_it():
    r = make()
    assert register(r, SRV_A, ALICE, 0.0) == {"ok": True}
    front(r, CLI, call(T_ALICE, ID1), 0.0)
    front(r, CLI, cancel(T_ALICE, ID1), 0.0)
    r.on_auth_result(token_key(T_ALICE), ALICE, 0.5)
    out = take(r)
    assert [to_server(f)[1].verb for _, f in out] == [p.CALL, p.CANCEL]


# --------------------------------------------------------------------------- registration


def test_registration_with_a_bad_credential_is_refused():
    r = make()
    login(r, T_ALICE, ALICE, 0.0)
    for bad in ("", "0" * 64, cred("bob-id"), cred("alice-id", b"other-secret"),
                cred("alice-id").upper()):
        ack = register(r, EVIL, ALICE, 0.0, credential=bad or "x")
        assert ack == {"ok": False, "error": "bad credential"}
    assert r.servers == {} and r.server_users == {}
    assert r.stats["bad_registration"] == 5
    # The impostor never receives alice's calls: there is no server for her.
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    (dest, frames), = take(r)
    assert dest == FRONT and client_event(frames).header["code"] == "NO_SERVER"


def test_impostor_cannot_displace_or_shadow_the_real_server():
    r = ready()
    assert register(r, EVIL, ALICE, 1.0, credential=cred("alice-id", b"guess"))["ok"] is False
    front(r, CLI, call(T_ALICE, ID1), 1.1)
    (dest, frames), = take(r)
    assert frames[0] == SRV_A
    # Replies and BYE from the refused peer do nothing.
    back(r, EVIL, p.reply(CLI, ID1, True, p.v1_event(ID1, "return", 1)), 1.2)
    back(r, EVIL, [b"", p.MAGIC, p.BYE], 1.2)
    assert take(r) == [] and r.servers["alice-id"].rid == SRV_A


def test_bad_registration_from_a_registered_server_leaves_it_registered():
    r = ready()
    assert register(r, SRV_A, BOB, 0.5, credential="wrong")["ok"] is False
    assert r.servers["alice-id"].rid == SRV_A and r.servers["bob-id"].rid == SRV_B
    assert r.server_users[SRV_A] == "alice-id"


def test_heartbeat_refreshes_and_updates_info():
    r = make()
    register(r, SRV_A, ALICE, 0.0, info={"workers": 1})
    assert register(r, SRV_A, ALICE, 1.5, info={"workers": 2}) == {"ok": True}
    entry = r.servers["alice-id"]
    assert entry.last_seen == 1.5 and entry.info == {"workers": 2}
    r.tick(3.0)  # 1.5 s since the last heartbeat < ttl 2.0
    assert "alice-id" in r.servers
    assert r.status()["servers"]["alice-id"]["info"] == {"workers": 2}


def test_any_message_from_a_registered_server_counts_as_a_heartbeat():
    r = ready()
    back(r, SRV_A, p.reply(b"nobody", ID1, False, [b"x"]), 1.9)
    r.tick(3.5)
    assert "alice-id" in r.servers and "bob-id" not in r.servers


def test_replacement_registration_fails_the_old_servers_calls():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    front(r, CLI2, legacy_call(T_ALICE), 1.0)
    take(r)
    back(r, SRV_A2, p.register("alice-id", cred("alice-id"), {}), 1.5)
    out = take(r)
    fronts = [f for d, f in out if d == FRONT]
    backs = [f for d, f in out if d == BACK]
    assert len(fronts) == 2 and len(backs) == 1 and backs[0][0] == SRV_A2
    by_client = {f[0]: f for f in fronts}
    ev = client_event(by_client[CLI])
    assert ev.call_id == ID1 and ev.header["code"] == "SERVER_GONE"
    assert "replaced" in ev.header["message"]
    legacy = legacy_reply(by_client[CLI2])
    assert legacy["type"] == "ERROR" and legacy["sequence"] == 0 and "replaced" in legacy["message"]
    assert r.inflight == {}
    # New calls go to the new server; the old one's replies are dropped.
    front(r, CLI, call(T_ALICE, ID2), 2.0)
    (_, frames), = take(r)
    assert frames[0] == SRV_A2
    back(r, SRV_A, p.reply(CLI, ID2, True, p.v1_event(ID2, "return", 1)), 2.1)
    assert take(r) == []


def test_a_replaced_server_cannot_take_its_user_back():
    r = ready()  # SRV_A registered (no start time: 0)
    back(r, SRV_A2, p.register("alice-id", cred("alice-id"), {"started": 200.0}), 1.0)
    take(r)
    # The old one's next heartbeat (it started earlier) is refused: it stops.
    back(r, SRV_A, p.register("alice-id", cred("alice-id"), {"started": 100.0}), 1.2)
    (dest, frames), = take(r)
    assert frames[0] == SRV_A and p.load_header(frames[4]) == {
        "ok": False, "error": "replaced by a newer server of this user"}
    assert r.servers["alice-id"].rid == SRV_A2
    front(r, CLI, call(T_ALICE, ID1), 1.5)
    (_, frames), = take(r)
    assert frames[0] == SRV_A2
    # A server that started later (a restart) still replaces it.
    back(r, SRV_A, p.register("alice-id", cred("alice-id"), {"started": 300.0}), 2.0)
    take(r)
    assert r.servers["alice-id"].rid == SRV_A


def test_server_ttl_expiry_fails_in_flight_calls():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 0.5)
    front(r, CLI2, legacy_call(T_ALICE), 0.5)
    front(r, CLI_B, call(T_BOB, ID1), 0.5)
    take(r)
    register(r, SRV_B, BOB, 2.0)  # bob's server keeps heartbeating
    r.tick(2.0)  # exactly ttl since alice's last heartbeat: still alive
    assert "alice-id" in r.servers and take(r) == []
    r.tick(2.01)
    assert "alice-id" not in r.servers and SRV_A not in r.server_users
    out = take(r)
    assert {f[0] for _, f in out} == {CLI, CLI2}
    for dest, frames in out:
        assert dest == FRONT
        if frames[0] == CLI:
            ev = client_event(frames)
            assert ev.kind == "error" and ev.final and ev.call_id == ID1
            assert ev.header["code"] == "SERVER_GONE" and "no heartbeat" in ev.header["message"]
        else:
            d = legacy_reply(frames)
            assert d["type"] == "ERROR" and d["details"] == "" and "alice-id" in d["message"]
    assert list(r.inflight) == [(CLI_B, ID1)]
    # A late reply from the expired server is dropped; new calls get NO_SERVER.
    back(r, SRV_A, p.reply(CLI, ID1, True, p.v1_event(ID1, "return", 1)), 2.1)
    assert take(r) == []
    front(r, CLI, call(T_ALICE, ID2), 2.2)
    assert client_event(take(r)[0][1]).header["code"] == "NO_SERVER"
    # Its next heartbeat registers it again.
    assert register(r, SRV_A, ALICE, 2.3) == {"ok": True}


def test_bye_drops_the_server_and_fails_its_calls_after_a_grace():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    back(r, SRV_A, [b"", p.MAGIC, p.BYE], 1.1)
    assert "alice-id" not in r.servers
    # Its worker's last events may still be on the way (their own connection).
    r.tick(1.1 + BYE_GRACE / 2)
    assert take(r) == [] and (CLI, ID1) in r.inflight
    r.tick(1.1 + BYE_GRACE)
    (dest, frames), = take(r)
    ev = client_event(frames)
    assert ev.header["code"] == "SERVER_GONE" and "server stopped" in ev.header["message"]
    assert r.inflight == {} and not r.busy


def test_a_worker_reply_within_the_bye_grace_still_ends_the_call():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    back(r, SRV_A, [b"", p.MAGIC, p.BYE], 1.1)
    ret = p.v1_event(ID1, "return", 1, None, [b"value"])
    back(r, WORKER, p.worker_reply("alice-id", cred("alice-id"), CLI, ID1, True, ret), 1.2)
    (dest, frames), = take(r)
    assert frames == [CLI, b"", *ret]
    r.tick(5.0)
    assert take(r) == [] and r.inflight == {}


def test_parked_calls_are_not_failed_by_server_expiry():
    r = make()
    register(r, SRV_A, ALICE, 0.0)
    front(r, CLI, call(T_ALICE, ID1), 0.0)
    r.tick(5.0)
    assert take(r) == []
    assert (CLI, ID1) in r.inflight and r.inflight[(CLI, ID1)].server_rid is None


# --------------------------------------------------------------------------- ping


def test_ping_reports_unknown_calls_per_connection():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    front(r, CLI, p.v1_ping(T_ALICE, [ID1, ID2]), 1.1)
    front(r, CLI2, p.v1_ping(T_ALICE, [ID1]), 1.1)  # not this connection's call
    out = take(r)
    assert [f[0] for _, f in out] == [CLI, CLI2]
    assert p.parse_client_bound(out[0][1][2:]) == {"server": True, "unknown": [ID2.hex()],
                                                   "draining": False}
    assert p.parse_client_bound(out[1][1][2:])["unknown"] == [ID1.hex()]


def test_ping_knows_calls_whose_token_is_being_checked():
    r = make()
    front(r, CLI, call(T_ALICE, ID1), 0.0)
    login(r, T_BOB, BOB, 0.0)
    # A PING under another (cached) token from the same connection: the parked call is known.
    front(r, CLI, p.v1_ping(T_BOB, [ID1, ID2]), 0.1)
    (_, frames), = take(r)
    assert p.parse_client_bound(frames[2:]) == {"server": False, "unknown": [ID2.hex()],
                                                "draining": False}


def test_ping_after_server_loss_reports_the_call_unknown_and_no_server():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 0.0)
    r.tick(10.0)
    take(r)
    front(r, CLI, p.v1_ping(T_ALICE, [ID1]), 10.1)
    (_, frames), = take(r)
    assert p.parse_client_bound(frames[2:]) == {"server": False, "unknown": [ID1.hex()],
                                                "draining": False}


# --------------------------------------------------------------------------- draining


def test_draining_refuses_new_calls_but_finishes_running_ones():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    r.start_draining()
    assert r.busy
    front(r, CLI, call(T_ALICE, ID2), 1.1)
    front(r, CLI2, legacy_call(T_ALICE), 1.1)
    out = take(r)
    ev = client_event(out[0][1])
    assert ev.call_id == ID2 and ev.header["code"] == "SHUTTING_DOWN"
    assert legacy_reply(out[1][1]) == rmod.LEGACY_DRAINING
    # PING says so; cancels and replies still flow.
    front(r, CLI, p.v1_ping(T_ALICE, [ID1]), 1.2)
    assert p.parse_client_bound(take(r)[0][1][2:]) == {"server": True, "unknown": [],
                                                       "draining": True}
    front(r, CLI, cancel(T_ALICE, ID1), 1.3)
    assert take(r)[0][0] == BACK
    back(r, SRV_A, p.reply(CLI, ID1, True, p.v1_event(ID1, "cancelled", 1, {"reason": "x"})), 1.4)
    assert take(r)[0][0] == FRONT
    assert not r.busy
    assert r.status()["draining"] is True


# --------------------------------------------------------------------------- legacy


def test_legacy_call_cancel_and_reply():
    r = ready()
    front(r, CLI, legacy_call(T_ALICE), 1.0)
    (dest, frames), = take(r)
    srv, msg = to_server(frames)
    assert srv == SRV_A
    assert msg == p.ServerBound(p.LEGACY_CALL, CLI, b"", "alice-id", [b"dill-fn", b"dill-args"])
    assert r.inflight[(CLI, b"")].legacy
    payload = p.legacy_payload(p.legacy_event("DATA", 2, channel="stdout", data="x"))
    back(r, SRV_A, p.reply(CLI, b"", False, [payload]), 1.1)
    assert take(r) == [(FRONT, [CLI, b"", payload])]
    front(r, CLI, [b"", T_ALICE.encode(), p.LEGACY_CANCEL, b"keyboard_interrupt"], 1.2)
    (dest, frames), = take(r)
    assert to_server(frames)[1] == p.ServerBound(p.LEGACY_CANCEL_VERB, CLI, b"", "alice-id",
                                                 [b"keyboard_interrupt"])


def test_legacy_bad_token_gets_the_deployed_string():
    r = make()
    front(r, CLI, legacy_call(T_BAD), 0.0)
    front(r, CLI, [b"", T_BAD.encode(), p.LEGACY_CANCEL, b"keyboard_interrupt"], 0.0)
    r.on_auth_result(token_key(T_BAD), Unauthenticated("no"), 0.1)
    out = take(r)
    assert out == [(FRONT, [CLI, b"", p.legacy_payload("Token validation failed.")])]
    # (the refused legacy cancel is not answered: its client closed the socket)


@pytest.mark.parametrize("outcome, text", [
    (Forbidden("not in group x"), "Token validation failed. not in group x"),
    (AuthUnavailable("down"), "Token validation failed: identity provider unavailable."),
])
def test_legacy_refusal_strings(outcome, text):
    r = make()
    login(r, T_BAD, outcome, 0.0)
    front(r, CLI, legacy_call(T_BAD), 0.1)
    assert legacy_reply(take(r)[0][1]) == text


# --------------------------------------------------------------------------- malformed


def test_malformed_v1_gets_bad_request_with_the_call_id():
    r = ready()
    front(r, CLI, [b"", p.MAGIC, p.CALL, T_ALICE.encode(), ID1, b"{}"], 1.0)  # no fn/args
    (dest, frames), = take(r)
    ev = client_event(frames)
    assert ev.call_id == ID1 and ev.header["code"] == "BAD_REQUEST"
    assert ev.header["message"].startswith("malformed request:")
    assert r.inflight == {} and r.stats["malformed"] == 1


def test_malformed_v1_echoes_at_most_64_bytes_of_call_id():
    r = make()
    front(r, CLI, [b"", p.MAGIC, b"WHAT", b"t", b"x" * 1000], 0.0)
    ev = client_event(take(r)[0][1])
    assert ev.call_id == b"x" * 64 and "unknown v1 verb" in ev.header["message"]


def test_malformed_legacy_gets_a_string():
    r = make()
    front(r, CLI, [b"", b"token", b"only-fn"], 0.0)
    assert legacy_reply(take(r)[0][1]).startswith("Malformed request: legacy message")


def test_missing_delimiter_is_answered():
    r = make()
    r.on_frontend([CLI, p.MAGIC, p.PING, b"t", b""], 0.0)
    ev = client_event(take(r)[0][1])
    assert ev.header["code"] == "BAD_REQUEST" and "delimiter" in ev.header["message"]
    r.on_frontend([CLI, b"garbage"], 0.0)
    assert "delimiter" in legacy_reply(take(r)[0][1])


def test_routing_id_alone_and_empty_body():
    r = make()
    r.on_frontend([CLI], 0.0)
    assert take(r) == []
    r.on_frontend([CLI, b""], 0.0)
    assert legacy_reply(take(r)[0][1]) == "Malformed request: empty message"


def test_malformed_backend_messages_are_dropped_silently():
    r = ready()
    for frames in ([SRV_A], [SRV_A, b"x", b"y"], [SRV_A, b""], [SRV_A, b"", p.LEGACY_HEARTBEAT],
                   [SRV_A, b"", p.MAGIC, b"NOPE"], [EVIL, b"", p.MAGIC, p.REGISTER, b"u"]):
        r.on_backend(frames, 1.0)
    assert take(r) == []
    assert r.stats["malformed_backend"] == 6


def test_status_has_no_secrets():
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    s = r.status()
    assert s["inflight"] == 1 and set(s["servers"]) == {"alice-id", "bob-id"}
    assert s["servers"]["alice-id"]["last_call_ago"] == 0.0
    assert s["servers"]["bob-id"]["last_call_ago"] is None
    text = repr(s)
    assert T_ALICE not in text and cred("alice-id") not in text and "fn-bytes" not in text


# --------------------------------------------------------------------------- fuzzing

_frame = st.one_of(
    st.binary(max_size=24),
    st.sampled_from([b"", p.MAGIC, p.CALL, p.CANCEL, p.PING, p.REGISTER, p.REPLY, p.BYE,
                     p.FINAL, p.MORE, T_ALICE.encode(), ID1, CLI, SRV_A, b"alice-id",
                     b"{}", b"[" * 2000]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.lists(_frame, max_size=8)), max_size=12))
@example([(False, [SRV_A, b"", p.MAGIC, p.REGISTER, b"u", b"c", b"[" * 5000])])
def test_router_never_raises_and_keeps_the_real_server(messages):
    """BUG (with the explicit example): deeply nested JSON in a REG info frame raises
    RecursionError out of on_backend (protocol.load_header does not catch it)."""
    r = ready()
    front(r, CLI, call(T_ALICE, ID1), 1.0)
    take(r)
    for is_front, frames in messages:
        rid = frames[0] if frames else b""
        if is_front:
            r.on_frontend(frames, 1.0)
        else:
            r.on_backend(frames, 1.0)
        for dest, out in r.outbox:
            if dest == BACK:
                # Only registration acks go to peers other than the registered servers.
                if out[0] not in (SRV_A, SRV_B):
                    assert p.frame_bytes(out[3]) == p.REGISTER_ACK
                    assert p.load_header(out[4])["ok"] is False
                    assert out[0] == rid
        take(r)
    # The fuzz never holds a valid credential, so alice's server is intact.
    assert r.servers["alice-id"].rid == SRV_A


def test_one_connection_registering_for_two_users_keeps_state_consistent():
    """BUG: a connection registered for alice that also registers (valid credential) for
    bob overwrites ``server_users[rid]`` but leaves ``servers["alice-id"].rid == rid``.
    When alice's entry then expires, ``_drop_server`` pops ``server_users[rid]`` (now
    bob's mapping), so bob's entry stays registered (its REG heartbeats keep refreshing
    it) while every RPL from that connection is dropped as "unregistered": bob's calls
    are routed to it and never answered. Either refuse the second registration or keep
    the two maps consistent."""
    r = make()
    login(r, T_BOB, BOB, 0.0)
    assert register(r, SRV_A, ALICE, 0.0) == {"ok": True}
    assert register(r, SRV_A, BOB, 0.0)["ok"] in (True, False)
    # Only bob's registration is refreshed from now on.
    register(r, SRV_A, BOB, 1.5)
    r.tick(2.5)
    take(r)
    for user, entry in r.servers.items():
        assert r.server_users.get(entry.rid) == user
    if "bob-id" in r.servers:
        front(r, CLI_B, call(T_BOB, ID1), 2.6)
        (dest, frames), = take(r)
        assert dest == BACK and frames[0] == SRV_A
        back(r, SRV_A, p.reply(CLI_B, ID1, True, p.v1_event(ID1, "return", 1)), 2.7)
        assert [d for d, _ in take(r)] == [FRONT], "bob's server's reply was dropped"


def test_the_loop_takes_the_outbox_and_the_checks_whole():
    r = Router(b"secret")
    r.on_frontend([b"rid-1", b"", b"not-a-message"], now=1.0)
    r.on_frontend([b"rid-2", b"", b"tok", b"fn", b"args"], now=1.0)
    out = r.take_outbox()
    assert [(dest, frames[0]) for dest, frames in out] == [(FRONT, b"rid-1")]
    assert r.take_outbox() == [] and r.outbox == []
    assert r.take_auth_requests() == [(token_key("tok"), "tok")]
    assert r.take_auth_requests() == []
