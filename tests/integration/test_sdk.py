"""The zexec SDK against a real broker and server (loopback TCP, real processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import numpy as np
import pytest

import zexec
from tests.helpers.procs import alive
from tests.helpers.remote_funcs import AppError
from tests.helpers.stack import wait_for
from zexec.core.errors import UnknownSerializerError

SERIALIZERS = ["dill", "cloudpickle"]


@pytest.fixture(params=SERIALIZERS)
def client(request, shared_stack):
    c = zexec.Client(shared_stack.frontend, shared_stack.tokens["alice"],
                     serializer=request.param)
    yield c
    c.close()


def test_positional_and_keyword_arguments(client):
    def f(a, b, *, scale=1, **extra):
        return (a + b) * scale, sorted(extra)

    assert client.call(f, 2, 3, scale=10, x=1, y=2) == (50, ["x", "y"])


def test_decorator_and_closure(client):
    offset = 100

    @client.remote
    def add(a, b):
        return a + b + offset

    assert add(5, 2) == 107
    assert add.local(5, 2) == 107


def test_output_streams_in_order_before_the_result(client, capsys):
    def chatty():
        import sys

        for i in range(100):
            print(f"line {i}")
        print("to stderr", file=sys.stderr)
        return "done"

    assert client.call(chatty) == "done"
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"line {i}" for i in range(100)]
    assert err == "to stderr\n"


def test_output_is_live(client, capsys, tmp_path):
    """The remote side waits for a file the test creates only after it has seen the
    first line here: the call can only finish if output streamed while it ran."""
    flag = tmp_path / "go"

    def wait_for_go(path):
        import os
        import time

        print("started", flush=True)
        while not os.path.exists(path):
            time.sleep(0.01)
        return "finished"

    fut = client.submit(wait_for_go, str(flag))
    seen = []

    def started():
        seen.append(capsys.readouterr().out)
        return "started" in "".join(seen)

    wait_for(started, timeout=30, what="live output")
    assert not fut.done()
    flag.touch()
    assert fut.result(timeout=30) == "finished"


def test_generator_items_stream(client, capsys):
    def gen(n):
        for i in range(n):
            print(f"before {i}")
            yield i * i

    it = client.call(gen, 5)
    assert isinstance(it, zexec.RemoteIterator)
    first = next(it)
    assert first == 0
    assert "before 0" in capsys.readouterr().out
    assert list(it) == [1, 4, 9, 16]


def test_remote_exception_keeps_its_type_and_traceback(client):
    def fail():
        raise ValueError("bad value")

    with pytest.raises(ValueError, match="bad value") as info:
        client.call(fail)
    text = "".join(traceback.format_exception(info.value))
    assert 'in fail\n    raise ValueError("bad value")' in text  # the remote frame, its line


def test_importable_custom_exception_is_reraised_as_itself(client):
    def fail():
        from tests.helpers.remote_funcs import AppError

        raise AppError("custom", 42)

    with pytest.raises(AppError) as info:
        client.call(fail)
    assert info.value.args == ("custom", 42)


def test_unimportable_exception_becomes_remote_error(client):
    def fail():
        class LocalOnly(Exception):
            pass

        raise LocalOnly("only over there")

    with pytest.raises(zexec.RemoteError) as info:
        client.call(fail)
    assert "LocalOnly" in info.value.type_name
    assert "only over there" in str(info.value)
    assert "in fail" in info.value.remote_traceback


def test_submit_map_and_asyncio(client):
    futures = [client.submit(pow, i, 2) for i in range(20)]
    assert [f.result(timeout=30) for f in futures] == [i * i for i in range(20)]
    assert list(client.map(lambda a, b: a - b, range(300), range(300, 0, -1))) == [
        a - b for a, b in zip(range(300), range(300, 0, -1), strict=True)
    ]

    async def main():
        return await asyncio.gather(*(client.call_async(abs, -i) for i in range(10)))

    assert asyncio.run(main()) == list(range(10))


def test_map_batches_quick_items_after_measuring_the_first(client):
    import sys

    def batch_len(x):  # the size of the batch this item came in (run_batch's argument)
        return x, len(sys._getframe(1).f_locals["arg_tuples"])

    out = list(client.map(batch_len, range(2000)))
    assert [x for x, _ in out] == list(range(2000))
    assert out[0][1] == 1  # nothing is known of the function's pace yet
    assert max(size for _, size in out) > 1


def test_map_with_a_fixed_batch_size_runs_each_batch_in_one_call(client):
    def pid(x):
        import os

        return os.getpid()

    pids = list(client.map(pid, range(100), batch_size=25))
    assert all(len(set(pids[i:i + 25])) == 1 for i in range(0, 100, 25))
    single = zexec.remote(lambda x: -x, client=client)
    assert list(single.map(range(10), batch_size=1)) == [-x for x in range(10)]
    with pytest.raises(ValueError, match="batch_size"):
        client.map(abs, [1], batch_size=0)


def test_batched_map_yields_the_items_before_a_failure_then_raises_it(client, capsys):
    def item(x):
        print("item", x)
        if x == 7:
            raise ValueError(f"bad item {x}")
        return x * 10

    got = []
    with pytest.raises(ValueError, match="bad item 7") as info:
        for value in client.map(item, range(20), batch_size=5):
            got.append(value)
    assert got == [x * 10 for x in range(7)]
    text = "".join(traceback.format_exception(info.value))
    assert "in item" in text and "run_batch" not in text
    out = capsys.readouterr().out
    assert all(f"item {x}\n" in out for x in range(8))


def test_user_code_sees_no_server_setting_or_credential(client):
    def zexec_env():
        import os

        return sorted(k for k in os.environ if k.startswith("ZEXEC_"))

    assert client.call(zexec_env) == []


def test_calls_go_from_the_broker_straight_to_the_workers(client, shared_stack):
    # Everything above passes through the server too (fresh-process mode): this is
    # what says the pooled path is direct dispatch (docs/protocol.md section 7.4).
    assert [client.call(abs, -i) for i in range(4)] == [0, 1, 2, 3]

    def alice() -> dict:
        (server,) = shared_stack.control_command(b"STATUS")["status"]["servers"].values()
        return server

    assert alice()["info"]["direct"] is True
    # Both workers announced themselves to the broker (the second starts later) and
    # are free again; nothing waits.
    wait_for(lambda: (alice()["workers"], alice()["idle"], alice()["queued"]) == (2, 2, 0),
             what="both workers known to the broker and idle")


def test_broker_and_workers_run_with_huge_pages_for_large_buffers(client, shared_stack):
    def tunables():
        import os

        return os.environ.get("GLIBC_TUNABLES", "")

    # The server re-executed itself with the tunable and passed it to its workers; so
    # did the broker (see zexec.adapters.hugepages).
    assert "glibc.malloc.hugetlb=1" in client.call(tunables)
    broker_env = Path(f"/proc/{shared_stack.broker.pid}/environ").read_bytes().split(b"\0")
    assert b"GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in broker_env


def test_remote_function_methods(client):
    square = zexec.remote(lambda x: x * x, client=client)
    assert square(7) == 49
    assert square.submit(8).result(timeout=30) == 64
    assert list(square.map([1, 2, 3])) == [1, 4, 9]
    assert asyncio.run(square.aio(9)) == 81
    assert square.options(timeout=30)(3) == 9


def test_timeout_stops_the_remote_work(client):
    def slow():
        import os
        import time

        print(os.getpid(), flush=True)
        time.sleep(60)

    with pytest.raises(zexec.CallTimeout):
        client.call(slow, _timeout=0.5)


def test_future_cancel_kills_the_worker(client, capsys):
    def slow():
        import os
        import time

        print(os.getpid(), flush=True)
        time.sleep(60)

    fut = client.submit(slow)
    out = wait_for(lambda: capsys.readouterr().out.strip(), what="worker pid")
    pid = int(out.split()[0])
    assert fut.cancel()
    wait_for(lambda: not alive(pid), what="worker to be killed")


def test_hundred_mib_numpy_round_trip(client):
    data = np.random.default_rng(0).random(100 * 1024 * 1024 // 8)
    back = client.call(lambda a: a, data)
    assert back.shape == data.shape
    assert np.array_equal(back, data)
    doubled = client.call(lambda a: a * 2, data[:1000])
    assert np.array_equal(doubled, data[:1000] * 2)


def test_bytes_and_memoryview_payloads(client):
    blob = os.urandom(3 * 1024 * 1024)
    assert client.call(lambda b: b[::-1], blob) == blob[::-1]
    assert client.call(lambda m: bytes(m), memoryview(blob)) == blob


def test_unknown_serializer_lists_installed(shared_stack):
    with pytest.raises(UnknownSerializerError, match="installed: cloudpickle, dill"):
        zexec.Client(shared_stack.frontend, "t", serializer="nope")
    with pytest.raises(UnknownSerializerError):
        zexec.remote(print, serializer="nope")


def test_python_version_mismatch_is_a_clear_error(shared_stack, monkeypatch):
    from zexec.apps.client import session

    monkeypatch.setattr(session, "PYTHON", "3.99")
    with zexec.Client(shared_stack.frontend, shared_stack.tokens["alice"]) as c:
        with pytest.raises(zexec.VersionMismatch, match=r"3\.99.*Python 3\.\d+"):
            c.call(abs, -1)


def test_bad_token_and_no_server(shared_stack):
    with zexec.Client(shared_stack.frontend, "not-a-token") as c:
        with pytest.raises(zexec.ZexecError, match="token validation failed"):
            c.call(abs, -1)
    with zexec.Client(shared_stack.frontend, shared_stack.tokens["bob"]) as c:
        with pytest.raises(zexec.ServerUnavailable, match="no server is running"):
            c.call(abs, -1)


CTRL_C_CLIENT = textwrap.dedent("""
    import sys, zexec
    client = zexec.Client(sys.argv[1], sys.argv[2])

    def slow():
        import os, time
        print("PID", os.getpid(), flush=True)
        time.sleep(60)

    try:
        client.call(slow)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        client.close()
""")


def test_ctrl_c_cancels_the_remote_call(shared_stack, tmp_path):
    script = tmp_path / "client.py"
    script.write_text(CTRL_C_CLIENT)
    proc = subprocess.Popen(
        [sys.executable, str(script), shared_stack.frontend, shared_stack.tokens["alice"]],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("PID"), line
        pid = int(line.split()[1])
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == "INTERRUPTED"
        wait_for(lambda: not alive(pid), what="the remote worker to be killed")
    finally:
        proc.kill()
        proc.wait()
