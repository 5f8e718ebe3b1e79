"""The worker's event stream, on a recording fake socket: order, batching, errors."""

from __future__ import annotations

import pytest

from zexec.adapters.serializer import default_registry
from zexec.apps.server.brokerlink import BrokerLink
from zexec.apps.server.outbound import ANNOUNCE_AFTER
from zexec.apps.server.worker import PYTHON, FunctionCache, Worker
from zexec.core import protocol as p

SER = default_registry().get("cloudpickle")


class RecordingSocket:
    """Collects whole multipart messages as sent (flags: 2 = more frames follow)."""

    def __init__(self) -> None:
        self.messages: list[list[bytes]] = []
        self._partial: list[bytes] = []

    def send(self, frame, flags=0, copy=True):
        self._partial.append(bytes(frame))
        if not flags & 2:
            self.messages.append(self._partial)
            self._partial = []


CLIENT = b"P-client-1"


@pytest.fixture(params=["direct", "via-server"])
def worker(request):
    """A worker whose v1 events go straight to the broker (the default), or through the
    server (fresh-process mode)."""
    link = BrokerLink(RecordingSocket(), "alice-id", "cred") if request.param == "direct" \
        else None
    return Worker(RecordingSocket(), flush_interval=3600, flush_bytes=1 << 20, broker=link)


def call_frames(fn, *args, ser: str = "cloudpickle", py: str = PYTHON,
                **kwargs) -> list[bytes]:
    return [b"key00001", b"1", b"c" * 16, CLIENT, p.dump_header({"ser": ser, "py": py}),
            SER.dumps(fn, out_of_band=False)[0], *SER.dumps((args, kwargs))]


def sent_events(worker) -> list[tuple[bool, p.Event]]:
    """(final, event) of everything the worker sent for the call, on either path."""
    to_server = worker.out.sock.messages
    events = []
    if worker.out.broker is None:
        for msg in to_server:
            assert msg[0] == b"key00001"
            events.append((msg[1] == p.FINAL, p.parse_client_bound(msg[2:])))
    else:
        for msg in worker.out.broker.sock.messages:
            wr = p.parse_backend(msg[1:])
            assert isinstance(wr, p.WorkerReply)
            assert (wr.user_id, wr.credential, wr.client_id) == ("alice-id", b"cred", CLIENT)
            events.append((wr.final, p.parse_client_bound(wr.body)))
        # The server hears only that the call ended.
        assert to_server == [[b"key00001", p.DONE]]
        worker.out.broker.sock.messages.clear()
    to_server.clear()
    return events


def run(worker, fn, *args, **kwargs):
    worker.execute(call_frames(fn, *args, **kwargs))
    return sent_events(worker)


def test_output_is_flushed_in_order_before_the_return(worker):
    def f():
        import sys

        print("a")
        print("b", file=sys.stderr)
        print("c")
        return 42

    events = run(worker, f)
    (f1, out), (f2, ret) = events
    assert not f1 and f2
    assert out.kind == p.EV_OUTPUT
    assert out.header["out"] == [["stdout", "a\n"], ["stderr", "b\n"], ["stdout", "c\n"]]
    assert ret.kind == p.EV_RETURN and SER.loads(ret.buffers) == 42
    assert [e.seq for _, e in events] == [1, 2]


def test_generator_items_interleave_with_output(worker):
    def g():
        for i in range(3):
            print(i)
            yield i

    kinds = [(e.kind, e.header.get("out")) for _, e in run(worker, g)]
    assert kinds == [
        ("out", [["stdout", "0\n"]]), ("yield", None),
        ("out", [["stdout", "1\n"]]), ("yield", None),
        ("out", [["stdout", "2\n"]]), ("yield", None),
        ("return", None),
    ]


def test_large_output_flushes_by_size(worker):
    worker.out.flush_bytes = 1000

    def f():
        for _ in range(100):
            print("x" * 99)

    events = run(worker, f)
    outs = [e for _, e in events if e.kind == p.EV_OUTPUT]
    assert len(outs) >= 9
    assert "".join(t for e in outs for _, t in e.header["out"]) == ("x" * 99 + "\n") * 100


def test_exception_carries_type_traceback_and_output(worker):
    def f():
        print("before")
        raise KeyError("k")

    (_, out), (final, err) = run(worker, f)
    assert out.header["out"] == [["stdout", "before\n"]]
    assert final and err.kind == p.EV_ERROR
    assert err.header["type"] == "KeyError" and err.header["code"] == "REMOTE_EXCEPTION"
    assert ", in f" in err.header["traceback"] and "KeyError" in err.header["traceback"]
    assert "worker.py" not in err.header["traceback"]  # only the user's frames
    assert isinstance(SER.loads(err.buffers), KeyError)


def test_unpicklable_return_value_is_an_error_not_a_crash(worker):
    def f():
        import threading

        return threading.Lock()

    (final, err), = run(worker, f)
    assert final and err.header["code"] == "SERIALIZATION"


def test_unknown_serializer_is_reported(worker):
    worker.execute(call_frames(len, ser="nope"))
    (final, ev), = sent_events(worker)
    assert final and ev.header["code"] == "UNKNOWN_SERIALIZER"
    assert "cloudpickle" in ev.header["message"]


def test_another_python_version_is_refused_by_name(worker):
    worker.execute(call_frames(len, py="3.99"))
    (final, ev), = sent_events(worker)
    assert final and ev.header["code"] == "VERSION_MISMATCH"
    assert "3.99" in ev.header["message"] and PYTHON in ev.header["message"]


def direct_worker(flush_interval: float = 3600) -> Worker:
    link = BrokerLink(RecordingSocket(), "alice-id", "cred")
    return Worker(RecordingSocket(), flush_interval=flush_interval, flush_bytes=1 << 20,
                  broker=link)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_quick_call_from_the_broker_is_answered_to_it_alone(legacy):
    import dill

    worker = direct_worker()
    if legacy:
        verb, call_key, rest = p.LEGACY_CALL, b"", [dill.dumps(abs), dill.dumps((-3,))]
    else:
        verb, call_key, frames = p.CALL, b"c" * 16, call_frames(abs, -3)
        rest = frames[4:]
    worker.execute_direct(p.to_server(verb, CLIENT, call_key, "alice-id", rest))
    assert worker.out.sock.messages == []  # the server hears nothing of a quick call
    replies = [p.parse_backend(m[1:]) for m in worker.out.broker.sock.messages]
    assert all(r.client_id == CLIENT and r.call_key == call_key for r in replies)
    assert [r.final for r in replies] == [False] * (len(replies) - 1) + [True]
    if legacy:  # START, DATA(return), END: the deployed event stream
        events = [dill.loads(r.body[0]) for r in replies]
        assert [e["type"] for e in events] == ["START", "DATA", "END"]
        assert events[1]["data"] == 3
    else:
        (ret,) = [p.parse_client_bound(r.body) for r in replies]
        assert ret.kind == p.EV_RETURN and SER.loads(ret.buffers) == 3


def test_the_server_hears_of_a_broker_given_call_that_runs_long():
    def slow():
        import time

        time.sleep(ANNOUNCE_AFTER * 4)
        return "done"

    worker = direct_worker(flush_interval=0.01)  # its flusher thread announces the call
    rest = call_frames(slow)[4:]
    worker.execute_direct(p.to_server(p.CALL, CLIENT, b"c" * 16, "alice-id", rest))
    assert worker.out.sock.messages == [[b"", b"T", CLIENT, b"c" * 16, b"1"], [b"", p.DONE]]
    (ret,) = [p.parse_client_bound(p.parse_backend(m[1:]).body)
              for m in worker.out.broker.sock.messages]
    assert SER.loads(ret.buffers) == "done"


def test_function_cache_reuses_deserialized_functions():
    cache = FunctionCache(size=2)
    frame = SER.dumps(len, out_of_band=False)[0]
    assert cache.get(SER, frame) is cache.get(SER, frame)
    for fn in (abs, min, max):
        cache.get(SER, SER.dumps(fn, out_of_band=False)[0])
    assert len(cache._items) == 2


def test_an_argument_of_a_module_missing_here_gets_the_clients_hint(worker):
    """A notebook's object of a package the server's environment lacks: the worker's
    error keeps Python's words, which the client's hint (localmods.missing_module_hint)
    turns into what to do."""
    from tests.helpers.absent_module import module_gone_after
    from zexec.apps.client.remote_errors import exception_from_event

    with module_gone_after() as thing:
        frames = call_frames(len, thing())
    worker.execute(frames)
    (final, err), = sent_events(worker)
    assert final and err.header["code"] == "SERIALIZATION"
    assert "No module named 'zexec_absent_mod'" in err.header["message"]
    notes = getattr(exception_from_event(err, SER), "__notes__", [])
    assert any("add it to your server's environment" in n for n in notes), notes
