"""The server <-> worker channel, the control port, the broker's answers to a server and
the legacy stream: pure encode/parse round trips, no sockets."""

from __future__ import annotations

import pickle

import pytest

from zexec.core import protocol as p
from zexec.core.errors import ProtocolError
from zexec.core.protocol import channel as ch
from zexec.core.protocol import legacy

CID, KEY = b"client-1", b"k" * 16


def test_start_up_handshake():
    assert ch.hello() == [b"HELLO"] and ch.ready() == [b"READY"]
    assert ch.parse_from_worker(ch.hello()) == ch.Hello()
    assert ch.parse_from_worker(ch.ready()) == ch.Ready()
    assert ch.parse_config(ch.config({"flush_bytes": 5})) == {"flush_bytes": 5}
    with pytest.raises(ProtocolError, match="expected CONFIG"):
        ch.parse_config([b"NOPE", b"{}"])


@pytest.mark.parametrize("is_legacy", [False, True])
def test_a_task_round_trips(is_legacy):
    rest = [b"fn", b"args"] if is_legacy else [p.dump_header({"ser": "dill"}), b"fn", b"a", b"b"]
    t = ch.parse_task(ch.task(b"task0001", is_legacy, KEY, CID, rest))
    assert (t.key, t.legacy, t.client_id) == (b"task0001", is_legacy, CID)
    if is_legacy:  # no call id, an empty header: legacy events carry neither
        assert (t.call_id, t.header, t.fn, t.args) == (b"", {}, b"fn", [b"args"])
    else:
        assert (t.call_id, t.header, t.fn, t.args) == (KEY, {"ser": "dill"}, b"fn", [b"a", b"b"])


def test_a_short_task_is_refused():
    with pytest.raises(ProtocolError):
        ch.parse_task([b"k", b"1", KEY])


def test_what_a_worker_says_about_its_calls():
    assert ch.parse_from_worker(ch.output(b"t1", False, [b"e1"])) == ch.Output(b"t1", False, [b"e1"])
    assert ch.parse_from_worker(ch.output(b"t1", True, [b"e2"])) == ch.Output(b"t1", True, [b"e2"])
    assert ch.parse_from_worker(ch.done(b"t1")) == ch.Done(b"t1")
    assert ch.parse_from_worker(ch.done()) == ch.Done(ch.NO_TASK)
    assert ch.parse_from_worker(ch.started(CID, KEY, True)) == ch.Started(CID, KEY, True)
    assert ch.started(CID, KEY, False) == [b"", b"T", CID, KEY, b"1"]
    # An unknown flag ends the task: a confused worker cannot keep a call open.
    assert ch.parse_from_worker([b"t1", b"?", b"x"]) == ch.Output(b"t1", True, [b"x"])
    for junk in ([], [b"WHAT"], [b"", b"X"], [b"", b"T", CID]):
        with pytest.raises(ProtocolError):
            ch.parse_from_worker(junk)


def test_control_port():
    req = p.control_request("admin", p.STATUS)
    assert req == [b"", b"admin", b"STATUS"]
    assert p.parse_control_request(req) == p.ControlRequest(b"admin", b"STATUS")
    assert p.parse_control_request(req[1:]) == p.ControlRequest(b"admin", b"STATUS")
    assert p.parse_control_request([b"", b"STATUS"]) is None
    # A command's arguments follow it (SERVER names the user).
    req = p.control_request("admin", p.SERVER, b"u-1")
    assert p.parse_control_request(req) == p.ControlRequest(b"admin", b"SERVER", (b"u-1",))
    assert p.parse_control_reply(p.control_reply({"ok": True})) == {"ok": True}


def test_register_ack_and_bye():
    assert p.parse_register_ack(p.register_ack({"ok": True, "last_call_ago": 1.5})) == \
        {"ok": True, "last_call_ago": 1.5}
    assert p.parse_register_ack(p.kill(b"w1")) is None
    assert p.parse_backend(p.bye()[1:]) == p.Bye()


def test_the_call_s_own_frames_of_a_to_server_message():
    frames = p.to_server(p.CALL, CID, KEY, "alice", [b"h", b"fn", b"args"])
    assert p.to_server_rest(frames) == [b"h", b"fn", b"args"]
    assert p.parse_server_bound(frames[1:]).rest == p.to_server_rest(frames)


@pytest.mark.parametrize("kind, fields, value, expected", [
    (p.EV_RETURN, {}, 42, {"type": "DATA", "sequence": 3, "channel": "return", "data": 42}),
    (p.EV_YIELD, {}, "x", {"type": "DATA", "sequence": 3, "channel": "yield", "data": "x"}),
    (p.EV_ERROR, {"message": "boom", "traceback": "tb"}, None,
     {"type": "ERROR", "sequence": 3, "message": "boom", "details": "tb"}),
    (legacy.START, {"function": "f"}, None, {"type": "START", "sequence": 3, "function": "f"}),
    (legacy.END, {}, None, {"type": "END", "sequence": 3}),
    (p.EV_OUTPUT, {"channel": "stdout", "data": "hi\n"}, None,
     {"type": "DATA", "sequence": 3, "channel": "stdout", "data": "hi\n"}),
])
def test_a_worker_event_in_the_legacy_stream(kind, fields, value, expected):
    assert legacy.legacy_event_for(kind, 3, fields, value) == expected


def test_legacy_final_events_are_one_payload():
    (err,) = p.final_error(KEY, True, "WORKER_DIED", "it died", seq=4)
    assert pickle.loads(err) == {"type": "ERROR", "sequence": 4, "message": "it died",
                                 "details": ""}
    (end,) = p.final_cancelled(KEY, True, "bye", seq=5)
    assert pickle.loads(end) == {"type": "END", "sequence": 5, "cancelled": True,
                                 "reason": "bye"}


def test_what_a_message_s_first_frames_tell():
    call = p.v1_request(p.CALL, "tok", KEY, [b"h", b"f", b"a"])[1:]
    assert p.v1_call_id(call) == KEY
    assert p.v1_call_id(call[:3]) == b""
    assert p.v1_call_id([b"tok", b"fn", b"args"]) is None and p.v1_call_id([]) is None
    reg = p.register("alice", "cred", {})
    assert p.backend_head_problem(reg[:2]) is None and p.backend_head_problem(reg) is None
    assert p.backend_head_problem([b"x"]) == "not a zexec backend message"
    assert p.backend_head_problem([b"", b"nope"]) == "not a zexec backend message"
    assert p.backend_head_problem(p.to_server(p.CALL, CID, KEY, "alice", [])) == \
        "only a registered server or worker may send this"
