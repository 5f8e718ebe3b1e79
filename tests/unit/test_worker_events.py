"""The worker's event stream, on a recording fake socket: order, batching, errors."""

from __future__ import annotations

import pytest

from zexec.adapters.serializer import default_registry
from zexec.apps.server.worker import FunctionCache, Worker
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


@pytest.fixture
def worker():
    return Worker(RecordingSocket(), flush_interval=3600, flush_bytes=1 << 20)


def run(worker, fn, *args, **kwargs):
    frames = [b"key00001", b"1", b"c" * 16, p.dump_header({"ser": "cloudpickle"}),
              SER.dumps(fn, out_of_band=False)[0], *SER.dumps((args, kwargs))]
    worker.execute(frames)
    events = []
    for msg in worker.out.sock.messages:
        assert msg[0] == b"key00001"
        events.append((msg[1] == p.FINAL, p.parse_client_bound(msg[2:])))
    worker.out.sock.messages.clear()
    return events


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
    frames = [b"key00001", b"1", b"c" * 16, p.dump_header({"ser": "nope"}), b"fn", b"args"]
    worker.execute(frames)
    (msg,) = worker.out.sock.messages
    ev = p.parse_client_bound(msg[2:])
    assert ev.header["code"] == "UNKNOWN_SERIALIZER" and "cloudpickle" in ev.header["message"]


def test_function_cache_reuses_deserialized_functions():
    cache = FunctionCache(size=2)
    frame = SER.dumps(len, out_of_band=False)[0]
    assert cache.get(SER, frame) is cache.get(SER, frame)
    for fn in (abs, min, max):
        cache.get(SER, SER.dumps(fn, out_of_band=False)[0])
    assert len(cache._items) == 2
