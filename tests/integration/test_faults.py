"""Failures a production system meets: dead servers, restarted or stopped brokers,
crashing workers, token floods. Every failure must surface as an error, never a hang
(the pytest timeout is the only clock here)."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time

import pytest
import zmq
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import zexec
from tests.helpers.http import run_uvicorn
from tests.helpers.procs import alive, live_children
from tests.helpers.remote_funcs import sleeper, wait_for_file
from tests.helpers.stack import Stack, wait_for
from zexec.core.broker.router import LEGACY_BAD_TOKEN
from zexec.core.protocol import legacy_payload


def test_server_killed_mid_call_fails_the_call(stack, capsys):
    with zexec.Client(stack.frontend, stack.tokens["alice"]) as c:
        fut = c.submit(sleeper, 60)
        wait_for(lambda: "sleeping" in capsys.readouterr().out, what="call to start")
        stack.kill_server("alice", signal.SIGKILL)
        with pytest.raises(zexec.ServerGone, match="stopped responding"):
            fut.result(timeout=30)
        # With no server registered any more, new calls are refused at once.
        with pytest.raises(zexec.ServerUnavailable):
            c.call(abs, -1)
        stack.start_server("alice")
        assert c.call(abs, -1) == 1


def test_client_survives_a_broker_restart(stack):
    with zexec.Client(stack.frontend, stack.tokens["alice"]) as c:
        assert c.call(abs, -1) == 1
        stack.stop_broker(signal.SIGKILL)
        with pytest.raises(zexec.BrokerUnreachable):
            c.call(abs, -2)
        stack.start_broker()
        # The server re-registers with its next heartbeat; the same client reconnects.
        wait_for(lambda: stack.control_command(b"STATUS")["status"]["servers"],
                 what="server to re-register")
        assert c.call(abs, -3) == 3


def test_call_in_flight_when_broker_dies_fails(stack, capsys):
    with zexec.Client(stack.frontend, stack.tokens["alice"]) as c:
        fut = c.submit(sleeper, 60)
        wait_for(lambda: "sleeping" in capsys.readouterr().out, what="call to start")
        stack.stop_broker(signal.SIGKILL)
        with pytest.raises((zexec.BrokerUnreachable, zexec.CallLost)):
            fut.result(timeout=30)


def test_worker_crash_is_reported_and_replaced(stack):
    def crash():
        import os

        os._exit(7)

    with zexec.Client(stack.frontend, stack.tokens["alice"]) as c:
        with pytest.raises(zexec.ZexecError, match="exited with status 7"):
            c.call(crash)
        assert [c.call(abs, -i) for i in range(5)] == list(range(5))


def test_sigterm_drains_the_broker(stack, capsys, tmp_path):
    release = tmp_path / "release"
    with zexec.Client(stack.frontend, stack.tokens["alice"]) as c:
        fut = c.submit(wait_for_file, str(release))
        wait_for(lambda: "waiting" in capsys.readouterr().out, what="call to start")
        stack.broker.send_signal(signal.SIGTERM)
        # The signal is handled asynchronously: a call racing it could still be routed.
        wait_for(lambda: stack.control_command(b"STATUS")["status"]["draining"],
                 what="the broker to start draining")
        with pytest.raises(zexec.ZexecError, match="shutting down"):
            c.call(abs, -1)
        release.touch()
        assert fut.result(timeout=30) == "released"  # the in-flight call finished
        assert stack.broker.wait(30) == 0


def test_fresh_process_mode_runs_each_call_in_a_new_worker(tmp_path):
    s = Stack(tmp_path)
    try:
        s.start_broker()
        s.start_server("alice", workers=1, ZEXEC_SERVER_FRESH_PROCESS="true")
        with zexec.Client(s.frontend, s.tokens["alice"]) as c:
            pids = {c.call(lambda: __import__("os").getpid()) for _ in range(3)}
        assert len(pids) == 3
    finally:
        s.close()


@pytest.fixture
def slow_idp():
    """An identity provider that answers alice at once and holds every other token
    until the test releases it: the worst case for a broker that validates inline."""
    release = threading.Event()
    pending = {"bad": 0}
    app = FastAPI()

    @app.post("/auth")
    async def auth(request: Request):
        import asyncio

        token = (await request.json())["token"]
        if token == "alice-token":
            return {"sub": "alice-id", "username": "alice"}
        pending["bad"] += 1
        while not release.is_set():
            await asyncio.sleep(0.01)
        return JSONResponse({"detail": "invalid"}, status_code=401)

    with run_uvicorn(app) as url:
        yield url, release, pending
        release.set()


def test_token_flood_does_not_delay_other_users(tmp_path, slow_idp):
    url, release, pending = slow_idp
    s = Stack(tmp_path, extra_broker_env={"ZEXEC_AUTH_MODE": "http-post",
                                          "ZEXEC_AUTH_URL": f"{url}/auth"})
    try:
        s.start_broker()
        s.start_server("alice", user_id="alice-id")
        ctx = zmq.Context.instance()
        flood = ctx.socket(zmq.DEALER)
        flood.setsockopt(zmq.LINGER, 0)
        flood.connect(s.frontend)
        fn, args = legacy_payload(None), legacy_payload(())
        for i in range(500):
            flood.send_multipart([b"", f"bad-token-{i}".encode(), fn, args])
        wait_for(lambda: pending["bad"] > 0, what="bad tokens to reach the IdP")
        with zexec.Client(s.frontend, "alice-token") as c:
            assert c.call(abs, -5) == 5
        # alice was served while the bad tokens were still held by the IdP.
        assert not release.is_set() and pending["bad"] > 0
        release.set()
        replies = []
        poller = zmq.Poller()
        poller.register(flood, zmq.POLLIN)
        while len(replies) < 4 and poller.poll(10_000):
            replies.append(flood.recv_multipart())
        # The flood's first tokens were refused as such; then the broker closed the
        # connection (more than 3 distinct invalid tokens on it).
        assert [pickle.loads(r[-1]) for r in replies] == [LEGACY_BAD_TOKEN] * 4
        counts = s.control_command(b"STATUS")["status"]["gateway"]["counts"]
        assert counts["closed_for_bad_tokens"] >= 1
        flood.close()
    finally:
        s.close()


def test_idle_server_exits_cleanly_and_unregisters(tmp_path):
    s = Stack(tmp_path)
    try:
        s.start_broker()
        proc = s.start_server("alice", ZEXEC_SERVER_IDLE_TIMEOUT="1")
        with zexec.Client(s.frontend, s.tokens["alice"]) as c:
            assert c.call(abs, -1) == 1
            assert proc.wait(60) == 0  # culled for idleness, not crashed
            with pytest.raises(zexec.ServerUnavailable):
                c.call(abs, -1)
    finally:
        s.close()


@pytest.mark.parametrize("code", [None, "143"])
def test_sigterm_drains_the_server_and_exits_with_the_signal_exit_code(tmp_path, code):
    """SIGTERM lets the running call finish, then the server exits with
    ZEXEC_SERVER_SIGNAL_EXIT_CODE (0 unless set): on Kubernetes 143, so a drained
    server's Job makes a new pod instead of completing as after an idle exit."""
    s = Stack(tmp_path)
    try:
        s.start_broker()
        env = {"ZEXEC_SERVER_SIGNAL_EXIT_CODE": code} if code else {}
        proc = s.start_server("alice", **env)
        with zexec.Client(s.frontend, s.tokens["alice"]) as c:
            fut = c.submit(time.sleep, 1.0)
            time.sleep(0.3)  # the call runs
            proc.send_signal(signal.SIGTERM)
            assert fut.result(timeout=60) is None  # drained, not cut
            assert proc.wait(60) == int(code or 0)
    finally:
        s.close()


def test_a_server_kept_busy_with_quick_calls_is_not_idle(tmp_path):
    """Quick calls never reach a direct server (its workers take them from the broker
    and announce only calls that run 50 ms): it must learn of them from the broker's
    RACK (last_call_ago), or it would exit as idle while in use."""
    s = Stack(tmp_path)
    try:
        s.start_broker()
        proc = s.start_server("alice", ZEXEC_SERVER_IDLE_TIMEOUT="1")
        with zexec.Client(s.frontend, s.tokens["alice"]) as c:
            end = time.monotonic() + 3  # three idle timeouts of quick calls
            while time.monotonic() < end:
                assert c.call(abs, -2) == 2
                assert proc.poll() is None, "culled as idle while serving calls"
                time.sleep(0.05)
            assert proc.wait(60) == 0  # and once the calls stop, it is idle
    finally:
        s.close()


def test_server_stays_responsive_while_the_broker_is_gone(tmp_path):
    """With the broker down, heartbeats must not pile up until a send blocks: the server
    keeps serving its loop, obeys SIGTERM, and re-registers when the broker returns."""
    s = Stack(tmp_path)
    try:
        s.start_broker()
        proc = s.start_server("alice", ZEXEC_SERVER_HEARTBEAT_INTERVAL="0.001")
        s.stop_broker(signal.SIGKILL)
        # Far more heartbeats than a socket queues (1000) while nobody listens.
        threading.Event().wait(3)
        s.start_broker()
        with zexec.Client(s.frontend, s.tokens["alice"]) as c:
            wait_for(lambda: s.control_command(b"STATUS")["status"]["servers"],
                     what="server to re-register")
            assert c.call(abs, -4) == 4
        s.stop_broker(signal.SIGKILL)
        threading.Event().wait(2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        s.servers.pop("alice")
    finally:
        s.close()


def test_workers_exit_when_their_server_dies_alone(stack):
    """kill -9 of the server's main process only (say, the OOM killer): its workers
    must not live on as orphans."""
    server = stack.servers["alice"]
    workers = live_children(server.pid)
    assert workers
    os.kill(server.pid, signal.SIGKILL)
    server.wait(10)
    wait_for(lambda: not any(alive(w) for w in workers), what="orphaned workers to exit")


def test_a_server_that_cannot_start_leaves_no_worker_behind(tmp_path):
    """``python -m zexec.apps.server`` starts its first worker before reading its
    settings; when the settings are bad it must take that worker and its private
    directory down with it."""
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEXEC_")}
    env["TMPDIR"] = str(tmp_path)  # where the server makes its private worker directory
    proc = subprocess.run([sys.executable, "-m", "zexec.apps.server"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "ZEXEC_SERVER_USER_ID" in proc.stderr
    assert list(tmp_path.iterdir()) == []
    workers = [p for p in Path("/proc").iterdir() if p.name.isdigit()
               and str(tmp_path) in _cmdline(p)]
    assert workers == []


def _cmdline(proc_dir) -> str:
    try:
        return (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
