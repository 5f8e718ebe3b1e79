"""The pure codecs of zexec.core.protocol: round trips, parse errors, and fuzzing.

Every encode function has a decode counterpart; these tests pin the frame layouts that
``docs/protocol.md`` documents, so a change to either shows up here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle

import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from zexec.core import protocol as p
from zexec.core.errors import ProtocolError
from zexec.core.model import Event

TOKEN = "tok-\u00e9"  # non-ASCII: tokens travel as UTF-8
CID = bytes(range(16))


def ids(n: int) -> list[bytes]:
    return [bytes([i]) * p.CALL_ID_SIZE for i in range(1, n + 1)]


# --------------------------------------------------------------------------- constants


def test_wire_constants_are_what_the_spec_says():
    # docs/protocol.md lists these byte strings; other-language peers hard-code them.
    assert p.MAGIC == b"\x00ZX1"
    assert p.PROTOCOL_VERSION == 1
    assert (p.CALL, p.CANCEL, p.PING) == (b"CALL", b"CNCL", b"PING")
    assert (p.EVT, p.PONG) == (b"EVT", b"PONG")
    assert (p.LEGACY_CALL, p.LEGACY_CANCEL_VERB, p.REGISTER_ACK) == (b"LCALL", b"LCNCL", b"RACK")
    assert (p.REGISTER, p.REPLY, p.BYE, p.FINAL, p.MORE) == (b"REG", b"RPL", b"BYE", b"F", b"M")
    assert (p.WORKER_REPLY, p.WORKER_READY, p.WORKER_GONE, p.KILL, p.DONE) == \
        (b"WRPL", b"WRDY", b"WGONE", b"KILL", b"D")
    assert p.LEGACY_CANCEL == b"__REXEC_CANCEL__"
    assert p.LEGACY_HEARTBEAT == b"__REXEC_HEARTBEAT__"
    assert p.FINAL_EVENTS == {"return", "error", "cancelled"}
    assert (p.EV_OUTPUT, p.EV_YIELD) == ("out", "yield")
    assert p.CALL_ID_SIZE == 16
    assert p.MAX_TOKEN_SIZE == 16 * 1024


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize("frame", [b"abc", bytearray(b"abc"), memoryview(b"abc"),
                                   zmq.Frame(b"abc")])
def test_frame_bytes_accepts_every_buffer_kind(frame):
    assert p.frame_bytes(frame) == b"abc"


def test_header_round_trip_is_compact_json():
    h = {"ser": "dill", "py": "3.11", "fn": "f", "timeout": 1.5, "nested": {"a": [1, None]}}
    raw = p.dump_header(h)
    assert b" " not in raw  # separators without spaces
    assert p.load_header(raw) == h
    assert p.load_header(memoryview(raw)) == h


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe\x00", b"[1, 2]", b"3",
                                 b'"s"', b"null"])
def test_load_header_rejects_non_objects(raw):
    with pytest.raises(ProtocolError):
        p.load_header(raw)


def test_server_credential_is_hmac_sha256_hex():
    expected = hmac.new(b"secret", b"zexec-server:user-1", hashlib.sha256).hexdigest()
    assert p.server_credential(b"secret", "user-1") == expected
    assert len(expected) == 64
    assert p.check_credential(b"secret", "user-1", expected.encode())


def test_credentials_differ_per_user_and_per_secret():
    a = p.server_credential(b"secret", "alice")
    assert a != p.server_credential(b"secret", "bob")
    assert a != p.server_credential(b"other", "alice")
    assert not p.check_credential(b"secret", "bob", a.encode())
    assert not p.check_credential(b"other", "alice", a.encode())
    assert not p.check_credential(b"secret", "alice", a.upper().encode())
    assert not p.check_credential(b"secret", "alice", b"")
    assert not p.check_credential(b"secret", "alice", a.encode()[:-1])


# --------------------------------------------------------------------------- frontend


def test_v1_call_round_trip():
    rest = [b'{"ser":"dill"}', b"fn", b"args", b"buf1", memoryview(b"buf2")]
    frames = p.v1_request(p.CALL, TOKEN, CID, rest)
    assert frames[:5] == [b"", p.MAGIC, p.CALL, TOKEN.encode(), CID]
    msg = p.parse_frontend(frames[1:])
    assert msg == p.V1Call(TOKEN, CID, rest)
    assert msg.rest[4] is rest[4]  # payload frames are passed through untouched


def test_v1_cancel_round_trip_with_and_without_reason():
    frames = p.v1_request(p.CANCEL, TOKEN, CID, [b"keyboard_interrupt"])
    assert p.parse_frontend(frames[1:]) == p.V1Cancel(TOKEN, CID, b"keyboard_interrupt")
    frames = p.v1_request(p.CANCEL, TOKEN, CID)
    assert p.parse_frontend(frames[1:]) == p.V1Cancel(TOKEN, CID, b"")


def test_v1_cancel_reason_is_truncated():
    frames = p.v1_request(p.CANCEL, TOKEN, CID, [b"x" * 5000])
    assert p.parse_frontend(frames[1:]).reason == b"x" * 1024


@pytest.mark.parametrize("n", [0, 1, 3, 100])
def test_v1_ping_round_trip(n):
    call_ids = ids(n)
    frames = p.v1_ping(TOKEN, call_ids)
    assert frames == [b"", p.MAGIC, p.PING, TOKEN.encode(), b"", b"".join(call_ids)]
    assert p.parse_frontend(frames[1:]) == p.V1Ping(TOKEN, tuple(call_ids))


def test_v1_ping_without_id_list_frame():
    assert p.parse_frontend([p.MAGIC, p.PING, b"t", b""]) == p.V1Ping("t", ())


def test_v1_ping_ignores_its_call_id_frame():
    msg = p.parse_frontend([p.MAGIC, p.PING, b"t", b"anything at all", CID])
    assert msg == p.V1Ping("t", (CID,))


def test_legacy_call_and_cancel():
    msg = p.parse_frontend([TOKEN.encode(), b"fn-bytes", b"args-bytes"])
    assert msg == p.LegacyCall(TOKEN, b"fn-bytes", b"args-bytes")
    msg = p.parse_frontend([b"t", p.LEGACY_CANCEL, b"keyboard_interrupt"])
    assert msg == p.LegacyCancel("t", b"keyboard_interrupt")
    assert p.parse_frontend([b"t", p.LEGACY_CANCEL, b"r" * 3000]).reason == b"r" * 1024


def test_other_protocol_markers_are_refused_not_taken_for_tokens():
    # A first frame starting with NUL is reserved for protocol markers: an unknown
    # version is refused clearly instead of being sent to the IdP as a legacy token.
    with pytest.raises(ProtocolError, match="unsupported protocol marker"):
        p.parse_frontend([b"\x00ZX2", b"fn", b"args"])


def test_max_size_token_is_accepted():
    tok = "a" * p.MAX_TOKEN_SIZE
    assert p.parse_frontend([tok.encode(), b"f", b"a"]).token == tok


@pytest.mark.parametrize(
    "body, match",
    [
        ([], "empty message"),
        ([p.MAGIC], "at least"),
        ([p.MAGIC, p.CALL, b"t"], "at least"),
        ([p.MAGIC, p.CALL, b"t", b"short", b"h", b"f", b"a"], "call id"),
        ([p.MAGIC, p.CALL, b"t", CID + b"x", b"h", b"f", b"a"], "call id"),
        ([p.MAGIC, p.CALL, b"t", CID, b"h", b"f"], "header, fn, args"),
        ([p.MAGIC, p.CANCEL, b"t", b"", b"r"], "call id"),
        ([p.MAGIC, p.PING, b"t", b"", b"x" * 17], "whole number"),
        ([p.MAGIC, b"NOPE", b"t", CID], "unknown v1 verb"),
        ([p.MAGIC, b"call", b"t", CID, b"h", b"f", b"a"], "unknown v1 verb"),
        ([p.MAGIC, p.CALL, b"", CID, b"h", b"f", b"a"], "empty token"),
        ([p.MAGIC, p.PING, b"\xff\xfe", b""], "UTF-8"),
        ([p.MAGIC, p.PING, b"a" * (p.MAX_TOKEN_SIZE + 1), b""], "too large"),
        ([b"t"], "exactly"),
        ([b"t", b"f"], "exactly"),
        ([b"t", b"f", b"a", b"extra"], "exactly"),
        ([b"", b"f", b"a"], "empty token"),
        ([b"\xc3\x28", b"f", b"a"], "UTF-8"),
        ([b"a" * (p.MAX_TOKEN_SIZE + 1), b"f", b"a"], "too large"),
        ([b"\x00ZX1x", p.CALL, b"t", CID, b"h", b"f", b"a"], "unsupported protocol marker"),
    ],
)
def test_parse_frontend_errors(body, match):
    with pytest.raises(ProtocolError, match=match):
        p.parse_frontend(body)


# --------------------------------------------------------------------------- events


def test_v1_event_round_trip_with_buffers():
    frames = p.v1_event(CID, p.EV_YIELD, 3, None, [b"main", b"oob"])
    assert frames[:3] == [p.MAGIC, p.EVT, CID]
    assert json.loads(frames[3]) == {"e": "yield", "seq": 3}
    ev = p.parse_client_bound(frames)
    assert ev == Event(CID, "yield", 3, {"e": "yield", "seq": 3}, (b"main", b"oob"))
    assert not ev.final


@pytest.mark.parametrize("kind, final", [("out", False), ("yield", False), ("return", True),
                                         ("error", True), ("cancelled", True)])
def test_final_events(kind, final):
    ev = p.parse_client_bound(p.v1_event(CID, kind, 1))
    assert ev.kind == kind and ev.final is final


def test_output_event_fields():
    frames = p.v1_event(CID, p.EV_OUTPUT, 1, {"out": [["stdout", "a\n"], ["stderr", "b"]]})
    ev = p.parse_client_bound(frames)
    assert ev.header["out"] == [["stdout", "a\n"], ["stderr", "b"]]
    assert ev.buffers == ()


def test_v1_error_round_trip():
    frames = p.v1_error(CID, "NO_SERVER", "no server", seq=4, type_name="T", traceback="tb",
                        buffers=[b"exc"])
    ev = p.parse_client_bound(frames)
    assert ev.kind == "error" and ev.seq == 4 and ev.final
    assert ev.header == {"e": "error", "seq": 4, "code": "NO_SERVER", "message": "no server",
                         "type": "T", "traceback": "tb"}
    assert ev.buffers == (b"exc",)


def test_v1_error_defaults_are_broker_style():
    ev = p.parse_client_bound(p.v1_error(b"", "BAD_REQUEST", "why"))
    assert ev.call_id == b"" and ev.seq == 0
    assert ev.header["type"] == "" and ev.header["traceback"] == ""


def test_pong_round_trip():
    header = {"server": True, "unknown": [CID.hex()], "draining": False}
    frames = p.v1_pong(header)
    assert frames == [p.MAGIC, p.PONG, b"", p.dump_header(header)]
    assert p.parse_client_bound(frames) == header


def test_event_header_without_e_and_seq():
    ev = p.parse_client_bound([p.MAGIC, p.EVT, CID, b"{}"])
    assert ev.kind == "" and ev.seq == 0


@pytest.mark.parametrize(
    "body",
    [
        [],
        [p.MAGIC, p.EVT, CID],
        [b"\x00ZX2", p.EVT, CID, b"{}"],
        [p.MAGIC, b"NOPE", CID, b"{}"],
        [p.MAGIC, p.EVT, CID, b"not json"],
        [p.MAGIC, p.EVT, CID, b"[]"],
        [p.MAGIC, p.PONG, b"", b"[]"],
    ],
)
def test_parse_client_bound_errors(body):
    with pytest.raises(ProtocolError):
        p.parse_client_bound(body)


@pytest.mark.parametrize("seq", [b'"x"', b"null", b"[1]", b"{}", b"1e999", b"-1e999"])
def test_parse_client_bound_bad_seq_is_a_protocol_error(seq):
    """BUG: a non-integer "seq" escapes as ValueError/TypeError/OverflowError.

    The client I/O thread (Session._on_message) only catches ProtocolError, so one such
    event from a server kills the thread: in-flight calls fail with "client was closed"
    and every later call on that Client hangs forever."""
    with pytest.raises(ProtocolError):
        p.parse_client_bound([p.MAGIC, p.EVT, CID, b'{"e":"out","seq":' + seq + b"}"])


# --------------------------------------------------------------------------- legacy


def test_legacy_payload_is_readable_by_pickle_and_dill():
    import dill

    event = p.legacy_event("DATA", 2, channel="stdout", data="hi\n")
    assert event == {"type": "DATA", "sequence": 2, "channel": "stdout", "data": "hi\n"}
    raw = p.legacy_payload(event)
    assert pickle.loads(raw) == event
    assert dill.loads(raw) == event
    assert dill.loads(p.legacy_payload("Token validation failed.")) == "Token validation failed."


def test_legacy_events():
    assert p.legacy_event("START", 1, function="f") == {"type": "START", "sequence": 1,
                                                         "function": "f"}
    assert p.legacy_event("END", 5) == {"type": "END", "sequence": 5}
    assert p.legacy_event("ERROR", 0, message="m", details="d") == {
        "type": "ERROR", "sequence": 0, "message": "m", "details": "d"}


# --------------------------------------------------------------------------- backend


@pytest.mark.parametrize("verb, rest", [
    (p.CALL, [b"{}", b"fn", b"args", b"buf"]),
    (p.LEGACY_CALL, [b"fn", b"args"]),
    (p.CANCEL, [b"reason"]),
    (p.LEGACY_CANCEL_VERB, [b"keyboard_interrupt"]),
])
def test_to_server_round_trip(verb, rest):
    frames = p.to_server(verb, b"client-rid", CID, "user-\u00e9", rest)
    assert frames[:6] == [b"", p.MAGIC, verb, b"client-rid", CID, "user-\u00e9".encode()]
    msg = p.parse_server_bound(frames[1:])
    assert msg == p.ServerBound(verb, b"client-rid", CID, "user-\u00e9", rest)


def test_parse_server_bound_errors():
    with pytest.raises(ProtocolError):
        p.parse_server_bound([p.MAGIC, p.CALL, b"c", b"k"])
    with pytest.raises(ProtocolError):
        p.parse_server_bound([b"\x00ZX2", p.CALL, b"c", b"k", b"u"])


def test_parse_server_bound_tolerates_non_utf8_user():
    msg = p.parse_server_bound([p.MAGIC, p.CALL, b"c", b"k", b"\xff"])
    assert msg.user_id == "\ufffd"


def test_register_round_trip():
    info = {"python": "3.11", "workers": 2, "pid": 123, "running": 0, "queued": 0}
    frames = p.register("user-1", "cred", info)
    assert frames == [b"", p.MAGIC, p.REGISTER, b"user-1", b"cred", p.dump_header(info)]
    assert p.parse_backend(frames[1:]) == p.Register("user-1", b"cred", info)


@pytest.mark.parametrize("final", [True, False])
def test_reply_round_trip(final):
    body = p.v1_event(CID, "return" if final else "out", 1, None, [b"v"])
    frames = p.reply(b"client-rid", CID, final, body)
    assert frames[:6] == [b"", p.MAGIC, p.REPLY, b"client-rid", CID, p.FINAL if final else p.MORE]
    assert p.parse_backend(frames[1:]) == p.Reply(b"client-rid", CID, final, body)


def test_legacy_reply_has_empty_call_key():
    payload = p.legacy_payload(p.legacy_event("END", 3))
    msg = p.parse_backend(p.reply(b"c", b"", True, [payload])[1:])
    assert msg == p.Reply(b"c", b"", True, [payload])


def test_bye():
    assert isinstance(p.parse_backend([p.MAGIC, p.BYE]), p.Bye)
    assert isinstance(p.parse_backend([p.MAGIC, p.BYE, b"ignored"]), p.Bye)


@pytest.mark.parametrize(
    "body, match",
    [
        ([], "MAGIC"),
        ([p.MAGIC], "MAGIC"),
        ([p.LEGACY_HEARTBEAT], "MAGIC"),
        ([b"\x00ZX2", p.BYE], "MAGIC"),
        ([p.MAGIC, p.REGISTER, b"u", b"c"], "REG needs"),
        ([p.MAGIC, p.REGISTER, b"u", b"c", b"{}", b"extra"], "REG needs"),
        ([p.MAGIC, p.REGISTER, b"\xff", b"c", b"{}"], "UTF-8"),
        ([p.MAGIC, p.REGISTER, b"u", b"c", b"junk"], "JSON"),
        ([p.MAGIC, p.REGISTER, b"u", b"c", b"[]"], "object"),
        ([p.MAGIC, p.REPLY, b"c", b"k", p.FINAL], "RPL needs"),
        ([p.MAGIC, p.REPLY, b"c", b"k", b"X", b"body"], "flag"),
        ([p.MAGIC, p.REPLY, b"c", b"k", b"f", b"body"], "flag"),
        ([p.MAGIC, b"HELLO"], "unknown backend verb"),
        ([p.MAGIC, p.CALL, b"c", b"k", b"u"], "unknown backend verb"),
    ],
)
def test_parse_backend_errors(body, match):
    with pytest.raises(ProtocolError, match=match):
        p.parse_backend(body)


def test_parse_backend_deeply_nested_registration_info_is_a_protocol_error():
    """BUG: json.loads raises RecursionError (not ValueError) on deeply nested input (depth
    >= ~1000), and load_header does not catch it. It escapes Router.on_backend: one REG
    from any unauthenticated peer on the backend port terminated the broker process
    (BrokerLoop.run now drops a message whose handling raises, which hides it there). It
    still kills the user's server: ServerLoop._on_call catches only (ProtocolError,
    IndexError) around load_header of the call header."""
    with pytest.raises(ProtocolError):
        p.parse_backend([p.MAGIC, p.REGISTER, b"u", b"c", b"[" * 100_000])


def test_load_header_deeply_nested_is_a_protocol_error():
    """BUG (root cause of the one above): load_header lets RecursionError through."""
    with pytest.raises(ProtocolError):
        p.load_header(b'{"a":' * 5000)


# --------------------------------------------------------------------------- fuzzing

_VERBS = [p.MAGIC, p.CALL, p.CANCEL, p.PING, p.EVT, p.PONG, p.REGISTER, p.REPLY, p.BYE,
          p.FINAL, p.MORE, p.LEGACY_CANCEL, p.LEGACY_HEARTBEAT, b"", b"\x00ZX2"]

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8,
)


@st.composite
def _header_frame(draw) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return p.dump_header(draw(st.dictionaries(st.sampled_from(["e", "seq", "ok", "x"]),
                                                  _json_values, max_size=4)))
    if choice == 1:
        return json.dumps(draw(_json_values)).encode()
    if choice == 2:
        depth = draw(st.integers(900, 3000))
        return draw(st.sampled_from([b"[", b'{"a":'])) * depth
    return draw(st.binary(max_size=32))


_frame = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(_VERBS),
    st.binary(min_size=16, max_size=16),
    _header_frame(),
    st.text(max_size=20).map(str.encode),
)


@st.composite
def _frames(draw) -> list[bytes]:
    frames = draw(st.lists(_frame, max_size=9))
    if frames and draw(st.booleans()):
        frames[0] = p.MAGIC  # near-valid v1 shapes are far more interesting
        if len(frames) > 1 and draw(st.booleans()):
            frames[1] = draw(st.sampled_from(_VERBS[:9]))
    return frames


_fuzz = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@_fuzz
@given(_frames())
def test_parse_frontend_raises_only_protocol_error(body):
    try:
        p.parse_frontend(body)
    except ProtocolError:
        pass


@_fuzz
@given(_frames())
@example([p.MAGIC, p.REGISTER, b"u", b"c", b"[" * 5000])
def test_parse_backend_raises_only_protocol_error(body):
    try:
        p.parse_backend(body)
    except ProtocolError:
        pass


@_fuzz
@given(_frames())
@example([p.MAGIC, p.EVT, CID, b'{"seq":"x"}'])
@example([p.MAGIC, p.EVT, CID, b"[" * 5000])
def test_parse_client_bound_raises_only_protocol_error(body):
    try:
        p.parse_client_bound(body)
    except ProtocolError:
        pass


@_fuzz
@given(_frames())
def test_parse_server_bound_raises_only_protocol_error(body):
    try:
        p.parse_server_bound(body)
    except ProtocolError:
        pass


@_fuzz
@given(st.text(min_size=1, max_size=64), st.lists(st.binary(min_size=16, max_size=16),
                                                  max_size=20))
def test_ping_round_trip_property(token, call_ids):
    assert p.parse_frontend(p.v1_ping(token, call_ids)[1:]) == p.V1Ping(token, tuple(call_ids))


@_fuzz
@given(st.text(min_size=1, max_size=64), st.binary(min_size=16, max_size=16),
       st.lists(st.binary(max_size=64), min_size=3, max_size=6))
def test_call_round_trip_property(token, call_id, rest):
    msg = p.parse_frontend(p.v1_request(p.CALL, token, call_id, rest)[1:])
    assert msg == p.V1Call(token, call_id, rest)


def test_direct_dispatch_messages_round_trip():
    ready = p.parse_backend(p.worker_ready("alice-id", "c" * 64)[1:])
    assert ready == p.WorkerReady("alice-id", b"c" * 64, reconnected=False)
    again = p.parse_backend(p.worker_ready("alice-id", "c" * 64, reconnected=True)[1:])
    assert again.reconnected
    gone = p.parse_backend(p.worker_gone(b"abc-w1", -9)[1:])
    assert gone == p.WorkerGone(b"abc-w1", -9)
    assert p.parse_backend([p.MAGIC, p.WORKER_GONE, b"w", b'{"exit_code": true}']) == \
        p.WorkerGone(b"w", None)  # not an int: unknown
    assert p.parse_kill(p.kill(b"abc-w1")[1:]) == b"abc-w1"
    assert p.parse_kill(p.to_server(p.CALL, b"c", b"k", "u", [b"h"])[1:]) is None
    for bad in ([p.MAGIC, p.WORKER_READY, b"u"], [p.MAGIC, p.WORKER_READY, b"u", b"c", b"X"],
                [p.MAGIC, p.WORKER_GONE, b"w"],
                [p.MAGIC, p.WORKER_GONE, b"w", b"not json"]):
        with pytest.raises(ProtocolError):
            p.parse_backend(bad)


def test_call_timeout_and_python_mismatch():
    assert p.call_timeout({"timeout": 2}) == 2.0
    for bad in ({}, {"timeout": 0}, {"timeout": -1}, {"timeout": True}, {"timeout": "5"}):
        assert p.call_timeout(bad) is None
    assert p.python_mismatch({"py": "3.11"}, "3.11") is None
    why = p.python_mismatch({"py": "3.12"}, "3.11")
    assert "3.12" in why and "3.11" in why and "python==3.12" in why
