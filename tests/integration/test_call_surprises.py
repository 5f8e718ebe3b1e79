"""Calls never surprise the caller (real broker, real server, real workers): a remote
``sys.exit`` or ``KeyboardInterrupt`` is an error here, never the end of this program;
output printed just before a worker crashes arrives before the error; the error names
the signal (a real segfault, a real SIGKILL, a real out-of-memory kill)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import traceback

import pytest

import zexec
from tests.helpers.cgroups import memory_limited
from tests.helpers.remote_funcs import (
    exits_3,
    gen_exit,
    hog,
    interrupts,
    kills_itself,
    plain_exit,
    segfaults_after_printing,
)
from tests.helpers.stack import Stack


@pytest.fixture(scope="module", params=["direct", "fresh-process"])
def stack(request, tmp_path_factory):
    """Direct dispatch (workers talk to the broker; the default) and fresh-process mode
    (events go through the server): the two paths a worker's death is reported on."""
    s = Stack(tmp_path_factory.mktemp("surprises"))
    s.start_broker()
    extra = {"ZEXEC_SERVER_FRESH_PROCESS": "true"} if request.param == "fresh-process" else {}
    s.start_server("alice", workers=1, **extra)
    yield s
    s.close()


@pytest.fixture
def client(stack):
    with zexec.Client(stack.frontend, stack.tokens["alice"]) as c:
        yield c


def test_remote_sys_exit_is_an_error_not_our_exit(client, capfd):
    with pytest.raises(zexec.RemoteExit) as info:
        client.call(exits_3)
    assert info.value.type_name == "SystemExit" and info.value.exit_status == 3
    assert "SystemExit(3)" in str(info.value) and "your program goes on" in str(info.value)
    # The remote frames are the exception's traceback (docs/notebooks.md).
    assert "sys.exit(3)" in "".join(traceback.format_exception(info.value))
    assert "about to exit" in capfd.readouterr().out
    with pytest.raises(zexec.RemoteExit, match=r"SystemExit\(None\)"):
        client.call(plain_exit)
    assert client.call(abs, -4) == 4  # the server goes on too


def test_remote_keyboard_interrupt_and_generator_exit_are_errors(client):
    with pytest.raises(zexec.RemoteExit, match="KeyboardInterrupt: remote ctrl-c") as info:
        client.call(interrupts)
    assert info.value.exit_status is None
    it = client.call(gen_exit)
    assert next(it) == 1
    with pytest.raises(zexec.RemoteExit, match="GeneratorExit"):
        next(it)


def test_a_script_whose_remote_function_exits_goes_on(stack, tmp_path):
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(f"""
        import zexec
        c = zexec.Client({stack.frontend!r}, {stack.tokens['alice']!r})
        def f():
            import sys
            sys.exit(3)
        try:
            c.call(f)
        except zexec.RemoteExit as e:
            print("caught", e.exit_status)
        print("still running")
        c.close()
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["caught 3", "still running"]


def test_output_before_a_segfault_arrives_before_the_named_error(client, capfd):
    for _ in range(3):  # every time, not by luck of timing
        with pytest.raises(zexec.WorkerDied) as info:
            client.call(segfaults_after_printing)
        out, err = capfd.readouterr()
        assert out == "line one\nlast words" and err == "to stderr\n"
        msg = str(info.value)
        assert "was killed by SIGSEGV (segmentation fault" in msg
        # faulthandler's stack: where in the user's code it crashed, not zexec's frames
        assert "in segfaults_after_printing" in msg and "zexec/apps" not in msg
    assert client.call(abs, -1) == 1  # a new worker took over


def test_sigkill_is_named_and_not_blamed_on_memory_without_evidence(client, capfd):
    with pytest.raises(zexec.WorkerDied, match="was killed by SIGKILL") as info:
        client.call(kills_itself, "SIGKILL")
    assert "sending SIGKILL" in capfd.readouterr().out
    assert "from the kernel's out-of-memory killer" not in str(info.value)


def test_abort_is_named(client):
    with pytest.raises(zexec.WorkerDied, match=r"was killed by SIGABRT \(aborted"):
        client.call(kills_itself, "SIGABRT")


def test_out_of_memory_kill_is_named(tmp_path, capfd):
    with memory_limited(300 * 1024 * 1024) as procs:
        if procs is None:
            pytest.skip("no memory cgroup can be made here (not root, or not delegated)")
        s = Stack(tmp_path)
        try:
            s.start_broker()
            # The server (and so its workers) start inside the limited cgroup.
            join = ("sh", "-c", f'echo $$ > {procs} && exec "$@"', "join")
            s.start_server("alice", workers=1, launcher=join)
            with zexec.Client(s.frontend, s.tokens["alice"]) as c:
                with pytest.raises(zexec.WorkerDied) as info:
                    c.call(hog)
                assert "allocating" in capfd.readouterr().out
                assert "was killed by SIGKILL from the kernel's out-of-memory killer" in \
                    str(info.value)
                assert c.call(abs, -2) == 2
        finally:
            s.close()
