"""Remote exceptions read like local ones, against a real broker and server: the caller's
traceback goes from the caller's line straight into the remote frames (their files,
lines and source), zexec's frames are cut (all of them with ``ZEXEC_DEBUG`` set), and a
post-mortem debugger shows the remote locals as they were."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import traceback

import pytest

import zexec

ZEXEC_INTERNALS = ("session.py", "concurrent/futures", "api.py", "remote_errors.py")


@pytest.fixture(scope="module")
def client(shared_stack):
    c = zexec.Client(shared_stack.frontend, shared_stack.tokens["alice"])
    yield c
    c.close()


def deepest(tb):
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def frames_of(exc):
    return [(f.name, f.line) for f in traceback.extract_tb(exc.__traceback__)]


def test_a_failed_call_shows_the_callers_line_then_the_remote_frames(client):
    def helper(values):
        total = sum(values)
        return total / (len(values) - 3)

    @zexec.remote(client=client)
    def average(values):
        scale = 2
        return helper(values) * scale

    with pytest.raises(ZeroDivisionError) as info:
        average([1, 2, 3])
    frames = frames_of(info.value)
    assert frames[-2:] == [("average", "return helper(values) * scale"),
                           ("helper", "return total / (len(values) - 3)")]
    zexec_frames = [name for name, _ in frames[:-2] if name != "test_a_failed_call_shows" +
                    "_the_callers_line_then_the_remote_frames"]
    assert zexec_frames == ["wrapper"]  # the one line that says where the rest went
    text = "".join(traceback.format_exception(info.value))
    assert not any(part in text for part in ZEXEC_INTERNALS), text
    assert "%debug or zexec.debug()" in text
    local = deepest(info.value.__traceback__).tb_frame.f_locals
    assert local["values"] == [1, 2, 3] and local["total"] == 6


def test_submit_map_and_generators_cut_the_same_way(client):
    def odd(x):
        if x == 3:
            raise ValueError(f"bad {x}")
        return x

    def gen(n):
        yield from range(n)
        raise LookupError("after the items")

    with pytest.raises(ValueError) as by_future:
        client.submit(odd, 3).result(timeout=30)
    with pytest.raises(ValueError) as by_map:
        list(client.map(odd, range(10), batch_size=4))
    with pytest.raises(LookupError) as by_gen:
        list(client.call(gen, 2))
    for info, name, line in ((by_future, "odd", 'raise ValueError(f"bad {x}")'),
                             (by_map, "odd", 'raise ValueError(f"bad {x}")'),
                             (by_gen, "gen", 'raise LookupError("after the items")')):
        assert frames_of(info.value)[-1] == (name, line)
        text = "".join(traceback.format_exception(info.value))
        assert not any(part in text for part in ZEXEC_INTERNALS), text


def test_an_exception_type_unknown_here_is_a_remote_error_with_the_frames(client):
    def fail():
        class OnlyThere(Exception):
            pass

        raise OnlyThere("defined remotely")

    with pytest.raises(zexec.RemoteError) as info:
        client.call(fail)
    assert frames_of(info.value)[-1] == ("fail", 'raise OnlyThere("defined remotely")')
    assert "OnlyThere: defined remotely" in str(info.value)
    assert "Remote traceback" not in str(info.value)  # the frames say it, once


def test_a_chained_remote_exception_keeps_the_chain_as_text(client):
    def fail():
        try:
            {}["key"]
        except KeyError as exc:
            raise RuntimeError("lookup failed") from exc

    with pytest.raises(RuntimeError) as info:
        client.call(fail)
    notes = "".join(info.value.__notes__)
    assert "KeyError: 'key'" in notes and "direct cause" in notes


def test_local_zexec_errors_show_only_the_callers_frame(client):
    with pytest.raises(zexec.CallTimeout) as info:
        client.call(__import__("time").sleep, 5, _timeout=0.2)
    assert [name for name, _ in frames_of(info.value)] == [
        "test_local_zexec_errors_show_only_the_callers_frame", "wrapper"]


def test_zexec_debug_keeps_every_frame(client, monkeypatch):
    monkeypatch.setenv("ZEXEC_DEBUG", "1")
    with pytest.raises(ZeroDivisionError) as info:
        client.call(divmod, 1, 0)
    text = "".join(traceback.format_exception(info.value))
    assert "session.py" in text and "concurrent/futures" in text


SCRIPT = textwrap.dedent('''
    import zexec

    @zexec.remote
    def compute(rows):
        threshold = 10
        kept = [r for r in rows if r > threshold]
        return sum(kept) / len(kept)

    try:
        compute([1, 2, 3])
    except ZeroDivisionError as exc:
        zexec.debug(exc)
    compute([4])
''')


def test_a_script_traceback_and_zexec_debug(shared_stack, tmp_path):
    """As a user's script meets it: the uncaught error's traceback, and pdb on the
    remote frame through zexec.debug() (commands on stdin)."""
    script = tmp_path / "analysis.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEXEC_")}
    env.update(ZEXEC_BROKER_URL=shared_stack.frontend, ZEXEC_TOKEN=shared_stack.tokens["alice"])
    proc = subprocess.run([sys.executable, str(script)], input="p threshold, rows\nw\nq\n",
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    # pdb stopped in the remote frame: its locals and the stack with its source.
    assert "(10, [1, 2, 3])" in proc.stdout
    assert f"{script}(8)compute()\n-> return sum(kept) / len(kept)" in proc.stdout
    err = proc.stderr
    assert f'File "{script}", line 14, in <module>\n    compute([4])' in err
    assert f'File "{script}", line 8, in compute\n    return sum(kept) / len(kept)' in err
    assert "ZEXEC_DEBUG=1 shows zexec's own" in err  # the one zexec line says so
    assert not any(part in err for part in ZEXEC_INTERNALS), err
