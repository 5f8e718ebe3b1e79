"""The spill a worker leaves for its server, the fatal-signal stack, the OOM counter and
the words for a worker's death (no processes: the files and counters are made here)."""

from __future__ import annotations

import struct

import pytest

from zexec.apps.server.crashlog import (
    OUT_AT,
    SIZE,
    Deaths,
    OomWatch,
    Spill,
    fault_stack,
    read_spill,
)
from zexec.core import protocol as p
from zexec.core.exits import describe_exit, worker_died


def test_a_running_calls_unsent_output_is_read_back(tmp_path):
    spill = Spill(tmp_path / "w1.spill")
    assert read_spill(tmp_path / "w1.spill") is None  # no call yet
    spill.begin(b"call-1", b"client-x", legacy=False)
    spill.output("stdout", "sent ")
    spill.sent(3)
    spill.flushed()  # that output went out with event 3
    spill.output("stdout", "a")
    spill.output("stdout", "b\n")
    spill.output("stderr", "é!")
    left = read_spill(tmp_path / "w1.spill")
    assert (left.call_id, left.client_id, left.legacy, left.seq) == (b"call-1", b"client-x",
                                                                      False, 3)
    assert left.output == (("stdout", "ab\n"), ("stderr", "é!")) and left.dropped == 0
    spill.end()
    assert read_spill(tmp_path / "w1.spill") is None  # the call ended: nothing to report


def test_overflow_is_counted_and_a_torn_record_stops_the_reading(tmp_path):
    spill = Spill(tmp_path / "s")
    spill.begin(b"", b"cli", legacy=True)
    spill.output("stdout", "x" * (SIZE - OUT_AT - 100))
    spill.output("stdout", "y" * 500)  # does not fit whole: the rest is counted as lost
    left = read_spill(tmp_path / "s")
    assert left.legacy and left.dropped > 0
    assert sum(len(t) for _, t in left.output) + left.dropped == SIZE - OUT_AT - 100 + 500
    spill.flushed()
    spill.output("stderr", "ok")
    # A record whose header was written but not its data (killed mid-write): it claims
    # more bytes than the file holds; reading keeps what is whole and stops there.
    raw = bytearray((tmp_path / "s").read_bytes())
    at = OUT_AT + 5 + 2
    raw[at:at + 5] = struct.pack("<BI", 1, SIZE)
    (tmp_path / "s").write_bytes(bytes(raw))
    left = read_spill(tmp_path / "s")
    assert left.output == (("stderr", "ok"),) and left.dropped == 0


def test_fault_stack_keeps_the_users_frames(tmp_path):
    import zexec

    zdir = zexec.__file__.rsplit("/", 1)[0]
    (tmp_path / "st").write_text(
        "Fatal Python error: Segmentation fault\n\nCurrent thread 0x7f (most recent call "
        "first):\n"
        '  File "/usr/lib/python3.11/ctypes/__init__.py", line 519 in string_at\n'
        '  File "/home/u/nb.py", line 3 in crash\n'
        f'  File "{zdir}/apps/server/worker.py", line 400 in _run_call\n'
        '  File "<frozen runpy>", line 88 in _run_code\n\nExtension modules: zmq (total: 1)\n')
    assert fault_stack(tmp_path / "st").splitlines() == [
        '  File "/usr/lib/python3.11/ctypes/__init__.py", line 519 in string_at',
        '  File "/home/u/nb.py", line 3 in crash']
    assert fault_stack(tmp_path / "missing") == ""


def test_oom_watch_sees_the_counter_grow(tmp_path):
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    watch = OomWatch([events])
    assert watch.killed() is False
    events.write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n")
    assert watch.killed() is True
    assert watch.killed() is False  # compared with the last look
    assert OomWatch([]).killed() is None
    assert OomWatch([tmp_path / "gone"]).killed() is None


@pytest.mark.parametrize("code, oom, words", [
    (7, None, "exited with status 7"),
    (-11, None, "was killed by SIGSEGV (segmentation fault"),
    (-6, None, "was killed by SIGABRT (aborted"),
    (-9, True, "SIGKILL from the kernel's out-of-memory killer"),
    (-9, False, "kill -9; the kernel counted no out-of-memory kill"),
    (-9, None, "by the kernel's out-of-memory killer when memory ran out, or by kill -9"),
    (-77, None, "was killed by signal 77"),
    (None, None, "exit status unknown"),
])
def test_deaths_are_named(code, oom, words):
    assert words in describe_exit(code, oom)
    assert worker_died(code, oom).startswith("the worker process running the call died: it ")


def test_death_output_in_the_calls_protocol(tmp_path):
    spill = Spill(tmp_path / "w.spill")
    spill.begin(b"c1", b"cli", legacy=False)
    spill.sent(2)
    spill.output("stdout", "out")
    spill.output("stderr", "err")
    death = Deaths(OomWatch([])).examine(tmp_path / "w.spill", tmp_path / "w.stack", -11)
    assert not (tmp_path / "w.spill").exists()  # read once, then removed
    assert "SIGSEGV" in death.message
    (v1,) = death.output(b"c1", False, 3)
    header = p.load_header(v1[3])
    assert header["e"] == p.EV_OUTPUT and header["seq"] == 3
    assert header["out"] == [["stdout", "out"], ["stderr", "err"]]
    legacy = death.output(b"", True, 5)
    import pickle

    events = [pickle.loads(body[0]) for body in legacy]
    assert events == [{"type": "DATA", "sequence": 5, "channel": "stdout", "data": "out"},
                      {"type": "DATA", "sequence": 6, "channel": "stderr", "data": "err"}]


def test_remote_exit_pickles_and_names_what_was_raised():
    import pickle

    from zexec.core.errors import RemoteExit

    exc = pickle.loads(pickle.dumps(RemoteExit.wrap(SystemExit(3))))
    assert (exc.type_name, exc.exit_status) == ("SystemExit", 3)
    assert str(exc) == ("the remote function raised SystemExit(3) (sys.exit() or exit()); "
                        "the call ended, your program goes on")
    ki = RemoteExit.wrap(KeyboardInterrupt("stop"))
    assert ki.exit_status is None and "KeyboardInterrupt: stop" in str(ki)
    assert RemoteExit.wrap(SystemExit(object())).exit_status.startswith("<object")
    assert isinstance(ki, Exception)  # caught by `except Exception`, unlike SystemExit
