"""The client session's logic on the in-memory transport: the test plays the broker."""

from __future__ import annotations

import pytest

from tests.helpers.transport_memory import InMemoryTransport
from zexec.adapters.serializer import default_registry
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


def test_an_announced_big_message_is_a_transfer_not_a_dead_broker(wire):
    session, _, broker = wire
    call = start(session)
    next_request(broker, p.CALL)
    # 8 MiB at the floor rate may take 0.5 s: longer than the 0.3 s liveness timeout.
    broker.send([b"", *p.v1_pong({"incoming": 8 << 20})])
    for _ in range(8):  # pings go unanswered meanwhile (they queue behind the message)
        next_request(broker, p.PING)
    assert not call.future.done()
    broker.send([b"", *p.v1_event(call.call_id, p.EV_RETURN, 1, None, SER.dumps("big"))])
    assert call.future.result(5) == "big"
    # Once the window has passed, silence is a dead broker again.
    call = start(session)
    next_request(broker, p.CALL)
    with pytest.raises(BrokerUnreachable, match="stopped answering"):
        call.future.result(10)


def test_cancel_sends_cancel_for_the_call(wire):
    session, _, broker = wire
    call = start(session)
    next_request(broker, p.CALL)
    session.cancel(call, "because", wait=5)
    req = next_request(broker, p.CANCEL)
    assert req.call_id == call.call_id and req.reason == b"because"


# --------------------------------------------------------------------------- who drives


def answer_calls(broker_end, count, value=1):
    """Play the broker in a thread: answer the next ``count`` calls with ``value``."""
    import threading

    def run():
        for _ in range(count):
            req = next_request(broker_end, p.CALL)
            broker_end.send([b"", *p.v1_event(req.call_id, p.EV_RETURN, 1, None,
                                              SER.dumps(value))])

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_a_plain_call_is_driven_by_the_calling_thread(wire):
    session, _, broker = wire
    fn = SER.dumps(abs, out_of_band=False)[0]
    answer_calls(broker, 3, value=7)
    assert [session.call(fn, (-7,), {}, SER) for _ in range(3)] == [7, 7, 7]
    assert session.inline_calls == 3 and session.pending == {}


def test_a_call_while_the_io_thread_drives_others_waits_for_it(wire):
    session, _, broker = wire
    slow = start(session)  # in flight: the I/O thread drives the connection
    next_request(broker, p.CALL)
    answer_calls(broker, 1, value=5)
    fn = SER.dumps(abs, out_of_band=False)[0]
    assert session.call(fn, (-5,), {}, SER) == 5
    assert session.inline_calls == 0  # handed over, not driven here
    broker.send([b"", *p.v1_event(slow.call_id, p.EV_RETURN, 2, None, SER.dumps(1))])
    assert slow.future.result(5) == 1


def test_nothing_in_flight_means_no_io_at_all(wire):
    import time

    session, _, broker = wire
    call = start(session)
    next_request(broker, p.CALL)
    broker.send([b"", *p.v1_event(call.call_id, p.EV_RETURN, 1, None, SER.dumps(1))])
    assert call.future.result(5) == 1
    time.sleep(0.1)  # let the I/O thread finish its round and park
    rounds = session.rounds
    time.sleep(0.5)  # idle: a spinning loop would count thousands of rounds here
    assert session.rounds == rounds


def test_warm_connects_and_has_the_token_checked_without_a_call(wire):
    session, _, broker = wire
    session.warm()
    ping = next_request(broker, p.PING)
    assert ping.token == "tok" and ping.call_ids == () and session.pending == {}


def test_a_result_of_a_module_missing_here_names_the_module(wire):
    """numpy on the server, not in the notebook: the error says which module, and what
    to do, instead of a bare ModuleNotFoundError from inside unpickling."""
    from tests.helpers.absent_module import module_gone_after
    from zexec.core.errors import SerializationError

    with module_gone_after() as thing:
        frames = SER.dumps(thing())
    session, _, broker = wire
    call = start(session)
    next_request(broker, p.CALL)
    broker.send([b"", *p.v1_event(call.call_id, p.EV_RETURN, 1, None, frames)])
    with pytest.raises(SerializationError, match="the return value .* module 'zexec_absent_mod'"
                       ".* install 'zexec_absent_mod' here") as info:
        call.future.result(5)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert call.call_id not in session.pending


# --------------------------------------------------------------------------- revival


class Hook:
    """A connection's revival hook: records its runs; may block or fail."""

    def __init__(self, fail: Exception | None = None) -> None:
        import threading

        self.runs = 0
        self.fail = fail
        self.release = threading.Event()
        self.release.set()

    def __call__(self, write) -> None:
        self.runs += 1
        self.release.wait(10)
        if self.fail is not None:
            raise self.fail


def refuse(broker, req, code="NO_SERVER"):
    broker.send([b"", *p.v1_error(req.call_id, code, "no server is running for user u")])


def test_a_call_refused_for_no_server_is_sent_again_once_the_hook_ran(wire):
    session, _, broker = wire
    session.revival.hook = hook = Hook()
    calls = [start(session) for _ in range(3)]
    first = [next_request(broker, p.CALL) for _ in calls]
    for req in first:
        refuse(broker, req)
    again = [next_request(broker, p.CALL) for _ in calls]
    assert {r.call_id for r in again}.isdisjoint({r.call_id for r in first})  # new ids
    assert [SER.loads(r.rest[2:]) for r in again] == [((-1,), {})] * 3
    for req in again:
        broker.send([b"", *p.v1_event(req.call_id, p.EV_RETURN, 1, None, SER.dumps(1))])
    assert [c.future.result(5) for c in calls] == [1, 1, 1]
    assert hook.runs == 1 and session.pending == {}


def test_a_call_driven_by_its_own_thread_is_revived_too(wire):
    import threading

    session, _, broker = wire
    session.revival.hook = Hook()

    def play():
        refuse(broker, next_request(broker, p.CALL))
        req = next_request(broker, p.CALL)
        broker.send([b"", *p.v1_event(req.call_id, p.EV_RETURN, 1, None, SER.dumps(9))])

    threading.Thread(target=play, daemon=True).start()
    fn = SER.dumps(abs, out_of_band=False)[0]
    assert session.call(fn, (-9,), {}, SER) == 9


def test_a_call_is_revived_once_only(wire):
    from zexec.core.errors import ServerUnavailable

    session, _, broker = wire
    session.revival.hook = hook = Hook()
    call = start(session)
    refuse(broker, next_request(broker, p.CALL))
    refuse(broker, next_request(broker, p.CALL))
    with pytest.raises(ServerUnavailable, match="no server is running"):
        call.future.result(5)
    assert hook.runs == 1


def test_without_a_hook_or_for_a_lost_server_the_call_fails_at_once(wire):
    from zexec.core.errors import ServerUnavailable

    session, _, broker = wire
    call = start(session)
    refuse(broker, next_request(broker, p.CALL))
    with pytest.raises(ServerUnavailable):
        call.future.result(5)
    session.revival.hook = hook = Hook()
    call = start(session)  # SERVER_GONE: the call may have run, never sent again
    refuse(broker, next_request(broker, p.CALL), code="SERVER_GONE")
    with pytest.raises(ServerGone):
        call.future.result(5)
    assert hook.runs == 0


def test_a_hook_that_fails_fails_the_parked_calls_saying_why(wire):
    from zexec.core.errors import ServerUnavailable

    session, _, broker = wire
    session.revival.hook = Hook(fail=ServerUnavailable("it failed (crash); start one"))
    call = start(session)
    refuse(broker, next_request(broker, p.CALL))
    with pytest.raises(ServerUnavailable, match=r"^it failed \(crash\); start one$"):
        call.future.result(5)  # the hook's own verdict, as it said it
    session.revival.hook = Hook(fail=OSError("Deploy API down"))
    call = start(session)
    refuse(broker, next_request(broker, p.CALL))
    with pytest.raises(ServerUnavailable, match="no server is running for user u; starting "
                                                "your server again did not work: Deploy API"):
        call.future.result(5)
    assert session.pending == {}


def test_a_call_cancelled_while_parked_is_not_sent_again(wire):
    import time
    from concurrent.futures import CancelledError

    session, _, broker = wire
    session.revival.hook = hook = Hook()
    hook.release.clear()  # the server takes its time to start again
    call, other = start(session), start(session)
    for req in (next_request(broker, p.CALL), next_request(broker, p.CALL)):
        refuse(broker, req)
    deadline = time.monotonic() + 5
    while hook.runs == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert call.future.cancel()
    hook.release.set()
    with pytest.raises(CancelledError):
        call.future.result(5)
    req = next_request(broker, p.CALL)  # only the other one comes again
    assert req.call_id == other.call_id
    broker.send([b"", *p.v1_event(req.call_id, p.EV_RETURN, 1, None, SER.dumps(2))])
    assert other.future.result(5) == 2
    assert call.done and session.pending == {}
