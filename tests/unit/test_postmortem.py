"""The worker's post-mortem of an exception (bounded, JSON-able, reprs for what does not
travel) and the client's stand-in frames built from it (real frames: their file, line,
function name and locals are the remote ones, and printers and pdb use them)."""

from __future__ import annotations

import io
import json
import linecache
import pdb
import threading
import traceback

import numpy as np

from zexec.adapters.serializer import default_registry
from zexec.apps.client import remote_frames
from zexec.apps.server import postmortem

SER = default_registry().get("cloudpickle")


def dumps(value):
    return bytes(SER.dumps(value, out_of_band=False)[0])


def fail_inside(n):
    small = {"n": n}
    big = np.zeros(100_000)  # 800 kB: its repr only
    lock = threading.Lock()  # does not pickle: its repr only
    return inner(n, small, big, lock)


def inner(n, small, big, lock):
    ratio = n / 0  # the failing line
    return ratio


def captured(fn, *args, dumps=dumps):
    try:
        fn(*args)
    except BaseException as exc:
        record, blobs = postmortem.capture(exc, dumps)
        return exc, json.loads(json.dumps(record)), blobs  # it must be JSON as it travels
    raise AssertionError("did not raise")


def test_capture_records_frames_positions_and_bounded_locals():
    _, record, blobs = captured(fail_inside, 7)
    frames = record["frames"]
    assert [f["name"] for f in frames] == ["captured", "fail_inside", "inner"]
    last = frames[-1]
    assert last["file"] == __file__ and last["module"] == __name__
    line = linecache.getline(__file__, last["line"])
    assert "ratio = n / 0" in line
    assert line.encode()[last["col"]:last["end_col"]] == b"n / 0"
    start, lines = last["source"]
    assert lines[last["line"] - start] == line
    names = {name: (text, index) for name, text, index in last["locals"]}
    assert SER.loads([blobs[names["small"][1]]]) == {"n": 7}
    assert names["big"][1] == -1 and names["big"][0].startswith("array([0., 0., 0.")
    assert names["lock"][1] == -1 and "lock" in names["lock"][0]
    assert sum(map(len, blobs)) <= postmortem.TOTAL_BYTES
    assert record["skipped"] == 0 and record["chained"] is False


def test_deep_recursion_keeps_the_innermost_frames_and_says_how_many_went():
    def down(k):
        if k == 0:
            raise ValueError("bottom")
        return down(k - 1)

    _, record, _ = captured(down, 100)
    assert len(record["frames"]) == postmortem.MAX_FRAMES
    assert record["skipped"] == 101 + 1 - postmortem.MAX_FRAMES  # down x101, captured
    assert record["frames"][-1]["locals"][0] == ["k", "0", 0]


def test_value_budget_turns_the_rest_into_reprs():
    def many():
        values = [bytes(60_000) + bytes([i]) for i in range(40)]  # noqa: F841
        a, b, c, d, e, f, g, h, i, j, k, m, n, o, p, q, r, s, t, u = values[:20]  # noqa: F841
        raise RuntimeError("x")

    _, record, blobs = captured(many)
    sent = [loc for loc in record["frames"][-1]["locals"] if loc[2] >= 0]
    assert 0 < len(sent) < 20
    assert sum(map(len, blobs)) <= postmortem.TOTAL_BYTES


def test_a_broken_repr_or_pickle_never_costs_the_error():
    class Hostile:
        def __repr__(self):
            raise RuntimeError("no repr")

        def __reduce__(self):
            raise RuntimeError("no pickle")

    def fail():
        h = Hostile()  # noqa: F841
        raise KeyError("k")

    _, record, blobs = captured(fail)
    (entry,) = [loc for loc in record["frames"][-1]["locals"] if loc[0] == "h"]
    assert entry[1].startswith("<Hostile ") and entry[2] == -1


def test_chained_exceptions_are_flagged():
    def fail():
        try:
            {}["missing"]
        except KeyError as exc:
            raise ValueError("wrapped") from exc

    _, record, _ = captured(fail)
    assert record["chained"] is True


def test_stand_in_frames_print_and_debug_like_the_remote_ones():
    exc, record, blobs = captured(fail_inside, 7)
    tb = remote_frames.remote_traceback(record, blobs, SER)
    text = "".join(traceback.format_exception(ZeroDivisionError, exc, tb))
    assert "in inner\n    ratio = n / 0  # the failing line\n            ~~^~~\n" in text
    assert "in fail_inside\n    return inner(n, small, big, lock)\n" in text
    last = tb
    while last.tb_next is not None:
        last = last.tb_next
    local = last.tb_frame.f_locals
    assert local["small"] == {"n": 7} and local["n"] == 7
    assert isinstance(local["big"], remote_frames.RemoteRepr)
    assert remote_frames.remote_part(tb) is tb
    out = io.StringIO()
    debugger = pdb.Pdb(stdin=io.StringIO("p small\np big\nup\np n\nq\n"), stdout=out)
    debugger.use_rawinput = False
    debugger.reset()
    debugger.interaction(None, tb)
    assert "{'n': 7}" in out.getvalue() and "array([0., 0., 0." in out.getvalue()
    assert "ratio = n / 0" in out.getvalue()


def test_sources_of_server_only_files_are_shown_and_local_files_win():
    record = {"frames": [
        {"file": "/srv/only/there.py", "name": "work", "module": "there", "line": 12,
         "end_line": 12, "col": 4, "end_col": 9, "source": [10, ["a = 1\n", "b = 2\n",
                                                                   "    boom()\n"]],
         "locals": [["a", "1", -1]]},
        {"file": __file__, "name": "inner", "module": __name__, "line": 3, "end_line": None,
         "col": None, "end_col": None, "source": [1, ["not this file's line\n"] * 5],
         "locals": []},
    ]}
    tb = remote_frames.remote_traceback(record, [], SER)
    text = "".join(traceback.format_tb(tb))
    assert 'File "/srv/only/there.py", line 12, in work\n    boom()\n    ^^^^^\n' in text
    assert linecache.getline(__file__, 3) in text and "not this file's line" not in text
    assert tb.tb_frame.f_locals["a"].text == "1"


def test_malformed_positions_fall_back_to_the_line():
    record = {"frames": [{"file": "<nowhere>", "name": "f", "line": 5, "end_line": 2,
                          "col": 9, "end_col": 1, "locals": [["x", "1", 99]]}]}
    tb = remote_frames.remote_traceback(record, [], SER)
    assert tb.tb_lineno == 5 and tb.tb_frame.f_code.co_name == "f"
