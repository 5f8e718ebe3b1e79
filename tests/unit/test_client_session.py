"""The client session's logic on the in-memory transport: the test plays the broker."""

from __future__ import annotations

import pytest

from zexec.adapters.serializer import default_registry
from zexec.adapters.transport_memory import InMemoryTransport
from zexec.apps.client.session import Session
from zexec.core import protocol as p
from zexec.core.errors import BrokerUnreachable, CallLost, CallTimeout, ServerGone

SER = default_registry().get("cloudpickle")


@pytest.fixture
def wire():
    client_end, broker_end = InMemoryTransport.pair()
    session = Session(lambda: client_end, "tok", connect_timeout=0.3, liveness_timeout=0.3,
                      ping_interval=0.05)
    yield session, client_end, broker_end
    session.close()


def start(session):
    fn = SER.dumps(abs, out_of_band=False)[0]
    return session.start_call(fn, (-1,), {}, SER)


def next_request(broker_end, verb=None):
    while True:
        msg = broker_end.recv(5)
        assert msg is not None, "the session sent nothing"
        if verb is None or msg[2] == verb:
            return p.parse_frontend(msg[1:])


def test_call_frames_and_result(wire, capsys):
    session, _, broker = wire
    call = start(session)
    req = next_request(broker, p.CALL)
    assert req.token == "tok" and req.call_id == call.call_id
    header = p.load_header(req.rest[0])
    assert header["ser"] == "cloudpickle" and header["py"]
    assert SER.loads(req.rest[2:]) == ((-1,), {})
    broker.send([b"", *p.v1_event(call.call_id, p.EV_OUTPUT, 1, {"out": [["stdout", "hi\n"]]})])
    broker.send([b"", *p.v1_event(call.call_id, p.EV_RETURN, 2, None, SER.dumps(1))])
    assert call.future.result(5) == 1
    assert capsys.readouterr().out == "hi\n"
    assert call.call_id not in session.pending


def test_error_codes_map_to_exceptions(wire):
    session, _, broker = wire
    call = start(session)
    next_request(broker, p.CALL)
    broker.send([b"", *p.v1_error(call.call_id, "DEADLINE_EXCEEDED", "too slow")])
    with pytest.raises(CallTimeout, match="too slow"):
        call.future.result(5)
    call = start(session)
    next_request(broker, p.CALL)
    broker.send([b"", *p.v1_error(call.call_id, "SERVER_GONE", "gone")])
    with pytest.raises(ServerGone):
        call.future.result(5)


def test_ping_reporting_the_call_unknown_fails_it(wire):
    session, _, broker = wire
    call = start(session)
    next_request(broker, p.CALL)
    ping = next_request(broker, p.PING)
    assert call.call_id in ping.call_ids
    broker.send([b"", *p.v1_pong({"server": True, "unknown": [call.call_id.hex()]})])
    with pytest.raises(CallLost):
        call.future.result(5)


def test_silent_broker_fails_calls_in_bounded_time(wire):
    session, _, broker = wire
    call = start(session)
    next_request(broker, p.CALL)  # received, never answered, pings ignored
    with pytest.raises(BrokerUnreachable, match="stopped answering"):
        call.future.result(10)


def test_no_connection_fails_after_connect_timeout(wire):
    session, client_end, _ = wire
    client_end.connected = False
    call = start(session)
    with pytest.raises(BrokerUnreachable, match="cannot reach the broker"):
        call.future.result(10)


def test_answered_pings_keep_a_long_call_alive(wire):
    session, _, broker = wire
    call = start(session)
    next_request(broker, p.CALL)
    for _ in range(12):  # well past the liveness timeout in total
        next_request(broker, p.PING)
        broker.send([b"", *p.v1_pong({"server": True, "unknown": []})])
    assert not call.future.done()
    broker.send([b"", *p.v1_event(call.call_id, p.EV_RETURN, 1, None, SER.dumps("ok"))])
    assert call.future.result(5) == "ok"


def test_cancel_sends_cancel_for_the_call(wire):
    session, _, broker = wire
    call = start(session)
    next_request(broker, p.CALL)
    session.cancel(call, "because", wait=5)
    req = next_request(broker, p.CANCEL)
    assert req.call_id == call.call_id and req.reason == b"because"
