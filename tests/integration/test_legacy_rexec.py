"""The released ``scidx-rexec==0.1.0`` client, unmodified, against zexec's broker and server.

Each test writes a small client script and runs it with the legacy venv's Python as a
real subprocess (see ``legacy_env.py``); the broker's address and the token travel in
the environment. Scripts print ``RESULT <repr>`` lines that the tests read back. The
legacy client has no timeout, so every wait here is bounded and fails with the client's
output when it runs out.
"""

from __future__ import annotations

import ast
import queue
import signal
import subprocess
import textwrap
import threading
from pathlib import Path

import pytest

from tests.helpers.procs import alive, live_children, parent_pid
from tests.helpers.stack import Stack, wait_for
from zexec.apps.devidp.tokens import user_id_for

pytest_plugins = ["legacy_env"]

# The venv build (first use only) is bounded by legacy_env itself, not by the per-test
# timeout, which covers the test body.
pytestmark = [pytest.mark.legacy, pytest.mark.timeout(120, func_only=True)]

CALL_TIMEOUT = 60.0  # bound on one client run; a healthy call takes well under a second

PREAMBLE = """\
import os, sys
from rexec.client_api import remote_func

remote_func.set_remote_addr(os.environ["REXEC_HOST"])
remote_func.set_remote_port(os.environ["REXEC_PORT"])
remote_func.set_exec_token(os.environ["REXEC_TOKEN"])


def result(value):
    print("RESULT", repr(value), flush=True)

"""


def _port(stack: Stack) -> str:
    return stack.frontend.rsplit(":", 1)[1]


def write_client(tmp_path: Path, body: str, name: str = "client.py") -> Path:
    path = tmp_path / name
    path.write_text(PREAMBLE + textwrap.dedent(body))
    return path


def client_cmd(legacy_env, stack: Stack, script: Path, token: str | None = None,
               user: str = "alice", args: tuple[str, ...] = ()) -> dict:
    """Popen keyword arguments to run ``script`` with the legacy client."""
    env = legacy_env.env(
        REXEC_HOST="127.0.0.1", REXEC_PORT=_port(stack),
        REXEC_TOKEN=stack.tokens[user] if token is None else token,
    )
    return {"args": [legacy_env.python, str(script), *args], "env": env,
            "cwd": str(script.parent), "stdin": subprocess.DEVNULL}


def run_client(legacy_env, stack: Stack, tmp_path: Path, body: str, **kw) -> subprocess.CompletedProcess:
    script = write_client(tmp_path, body)
    cmd = client_cmd(legacy_env, stack, script, **kw)
    try:
        return subprocess.run(**cmd, capture_output=True, text=True, timeout=CALL_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the legacy client did not finish within {CALL_TIMEOUT:g}s\n"
                    f"stdout:\n{_text(exc.stdout)}\nstderr:\n{_text(exc.stderr)}\n"
                    f"broker log:\n{stack.log('broker')}\nserver log:\n"
                    f"{stack.log('server-alice')}")


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def results(proc: subprocess.CompletedProcess) -> list:
    """The values the script reported with ``result(...)``, in order."""
    assert proc.returncode == 0, f"client failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return [ast.literal_eval(line[len("RESULT "):])
            for line in proc.stdout.splitlines() if line.startswith("RESULT ")]


# --------------------------------------------------------------------------- basics


def test_add(legacy_env, shared_stack, tmp_path):
    proc = run_client(legacy_env, shared_stack, tmp_path, """
        @remote_func
        def add(a, b):
            return a + b

        result(add(5, 2))
    """)
    assert results(proc) == [7]


def test_hundred_lines_arrive_in_order(legacy_env, shared_stack, tmp_path):
    proc = run_client(legacy_env, shared_stack, tmp_path, """
        @remote_func
        def chatty(n):
            import sys
            for i in range(n):
                print(f"line {i}")
            print("to stderr", file=sys.stderr)
            return "done"

        result(chatty(100))
    """)
    assert results(proc) == ["done"]
    lines = proc.stdout.splitlines()
    assert lines[:100] == [f"line {i}" for i in range(100)], proc.stdout
    assert lines[100:] == ["RESULT 'done'"], proc.stdout
    assert "to stderr" in proc.stderr


def test_remote_value_error_raises_runtime_error(legacy_env, shared_stack, tmp_path):
    proc = run_client(legacy_env, shared_stack, tmp_path, """
        @remote_func
        def boom():
            print("before the error")
            raise ValueError("bad value")

        try:
            boom()
        except RuntimeError as exc:
            result([type(exc).__name__, str(exc)])
        else:
            result("no error")
    """)
    [(kind, message)] = results(proc)
    assert kind == "RuntimeError"
    assert "bad value" in message
    # Output printed before the error is flushed ahead of it.
    assert proc.stdout.index("before the error") < proc.stdout.index("RESULT")


def test_bad_token_prints_broker_error_and_returns_none(legacy_env, shared_stack, tmp_path):
    proc = run_client(legacy_env, shared_stack, tmp_path, """
        @remote_func
        def add(a, b):
            return a + b

        result(add(5, 2))
    """, token="not-a-valid-token")
    assert results(proc) == [None]
    assert proc.stdout.splitlines()[0] == "Token validation failed."


def test_no_server_for_user_prints_error_and_returns_none(legacy_env, shared_stack, tmp_path):
    assert "bob" not in shared_stack.servers
    proc = run_client(legacy_env, shared_stack, tmp_path, """
        @remote_func
        def add(a, b):
            return a + b

        result(add(5, 2))
    """, user="bob")
    assert results(proc) == [None]
    first = proc.stdout.splitlines()[0]
    assert first.startswith("Server not ready/available for user "), proc.stdout
    assert user_id_for("bob") in first


# --------------------------------------------------------------------------- payloads


def test_nested_return_value(legacy_env, shared_stack, tmp_path):
    proc = run_client(legacy_env, shared_stack, tmp_path, """
        @remote_func
        def build(n, tag):
            return {
                "tag": tag,
                "squares": [i * i for i in range(n)],
                "nested": {"tuple": (1, "two", 3.0), "set": sorted({3, 1, 2}), "none": None},
                "bytes": b"\\x00\\xff",
                "deep": [[{"k": [i, {"v": -i}]}] for i in range(3)],
            }

        result(build(5, "x"))
    """)
    assert results(proc) == [{
        "tag": "x",
        "squares": [0, 1, 4, 9, 16],
        "nested": {"tuple": (1, "two", 3.0), "set": [1, 2, 3], "none": None},
        "bytes": b"\x00\xff",
        "deep": [[{"k": [i, {"v": -i}]}] for i in range(3)],
    }]


def test_closure_lambda_and_local_functions(legacy_env, shared_stack, tmp_path):
    proc = run_client(legacy_env, shared_stack, tmp_path, """
        def make_adder(n):
            def adder(x):
                return x + n
            return adder

        def outer(x):
            def double(y):
                return y * 2
            def twice(f, y):
                return f(f(y))
            return twice(double, x)

        result(remote_func(make_adder(5))(1))                # closure
        result(remote_func(lambda x, y: [x, {"y": y}])(3, 4))  # lambda
        result(remote_func(outer)(4))                         # locally defined functions
        result(remote_func(lambda xs: sorted(xs, key=lambda v: -v))([1, 3, 2]))
    """)
    assert results(proc) == [6, [3, {"y": 4}], 16, [3, 2, 1]]


def test_module_level_helper_with_dill_recurse(legacy_env, shared_stack, tmp_path):
    """With ``dill.settings["recurse"]`` the client ships the module-level functions and
    globals the remote function refers to."""
    proc = run_client(legacy_env, shared_stack, tmp_path, """
        import dill
        dill.settings["recurse"] = True

        SCALE = 10

        def helper(x):
            return x * SCALE

        @remote_func
        def uses_helper(x):
            return helper(x) + 1

        result(uses_helper(2))
    """)
    assert results(proc) == [21]


# --------------------------------------------------------------------------- cancel


def test_sigint_cancels_remote_work(legacy_env, shared_stack, tmp_path):
    script = write_client(tmp_path, """
        @remote_func
        def slow():
            import os, time
            print(os.getpid(), flush=True)
            time.sleep(60)
            return "finished"

        result(slow())
    """)
    client = subprocess.Popen(**client_cmd(legacy_env, shared_stack, script),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in client.stdout], daemon=True)
    reader.start()
    try:
        try:
            first = lines.get(timeout=CALL_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"the remote function's PID never reached the client's stdout; "
                        f"server log:\n{shared_stack.log('server-alice')}")
        worker = int(first)
        server = shared_stack.servers["alice"].pid
        assert parent_pid(worker) == server, \
            f"PID {worker} should be a worker of alice's server {server}"

        client.send_signal(signal.SIGINT)
        try:
            client.wait(timeout=CALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail("the legacy client did not exit after SIGINT")
        stderr = client.stderr.read()
        assert client.returncode != 0
        assert "KeyboardInterrupt" in stderr, stderr

        wait_for(lambda: not alive(worker), timeout=15,
                 what=f"worker {worker} to be killed after the client's cancel")
        # The server replaces the worker and keeps serving.
        wait_for(lambda: len(live_children(server)) == 2 and worker not in
                 live_children(server), timeout=15, what="the server to replace the worker")
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    reader.join(5)
    assert "RESULT" not in "".join(lines.queue)

    proc = run_client(legacy_env, shared_stack, tmp_path, """
        result(remote_func(lambda a, b: a + b)(5, 2))
    """)
    assert results(proc) == [7]


# --------------------------------------------------------------------------- concurrency


def test_concurrent_legacy_clients(legacy_env, shared_stack, tmp_path):
    script = write_client(tmp_path, """
        @remote_func
        def work(i):
            import time
            print(f"working on {i}")
            time.sleep(0.05)
            return {"i": i, "square": i * i}

        i = int(sys.argv[1])
        result(work(i))
    """)
    n = 8
    procs = [
        subprocess.Popen(**client_cmd(legacy_env, shared_stack, script, args=(str(i),)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(n)
    ]
    try:
        outs = []
        for p in procs:
            try:
                out, err = p.communicate(timeout=CALL_TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a concurrent legacy client did not finish; server log:\n"
                            f"{shared_stack.log('server-alice')}")
            outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, proc in enumerate(outs):
        assert results(proc) == [{"i": i, "square": i * i}]
        assert proc.stdout.splitlines()[0] == f"working on {i}"


# --------------------------------------------------------------------------- isolation


@pytest.mark.parametrize("name", ["p", "inspect"])
def test_function_globals_do_not_clobber_the_worker(legacy_env, tmp_path, name):
    """The legacy client pickles a script's function (dill, ``recurse`` off) with its
    globals as a *reference* to ``__main__`` of the process that unpickles it. A user
    function that keeps state in a global must not overwrite the worker's own names
    (``p`` and ``inspect`` are module globals of ``zexec.apps.server.worker``): the call
    succeeds and the worker keeps serving the calls after it."""
    stack = Stack(tmp_path)
    try:
        stack.start_broker()
        stack.start_server("alice", workers=1)  # every call on the same worker
        proc = run_client(legacy_env, stack, tmp_path, f"""
            @remote_func
            def keep_state():
                global {name}
                {name} = {{"n": 1}}
                return {name}["n"]

            @remote_func
            def add(a, b):
                return a + b

            for f, args in ((keep_state, ()), (add, (5, 2)), (add, (1, 1))):
                try:
                    result(f(*args))
                except RuntimeError as exc:
                    result(f"RuntimeError: {{exc}}")
        """)
        assert results(proc) == [1, 7, 2]
    finally:
        stack.close()
