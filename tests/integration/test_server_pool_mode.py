"""A server started in warm-pool mode (no user id, no credential) as real processes on
loopback: it asks a binding endpoint (a stand-in for the Deploy API's ``/pool/bind``)
with its pod name and key, keeps asking while it is told to wait, then registers with
the real broker as the user it was bound to, and that user's calls run in it; a
refused binding stops it with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import zexec
from tests.helpers.stack import SECRET, Stack, _env, wait_for
from zexec.apps.devidp.tokens import user_id_for
from zexec.core.protocol import server_credential


class Binder:
    """Answers 204 (wait) ``waits`` times, then ``answer`` (status, body)."""

    def __init__(self, waits: int, answer: tuple[int, dict]) -> None:
        self.asked: list[tuple[str, str, dict]] = []
        self.registered: list[tuple[str, dict]] = []
        self.waits, self.answer = waits, answer
        binder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.endswith("/pool/registered"):
                    binder.registered.append((self.headers["Authorization"], body))
                    self.send_response(204)
                    self.end_headers()
                    return
                binder.asked.append((self.path, self.headers["Authorization"], body))
                if len(binder.asked) <= binder.waits:
                    self.send_response(204)
                    self.end_headers()
                    return
                status, payload = binder.answer
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/rexec"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def broker(tmp_path):
    s = Stack(tmp_path)
    s.start_broker()
    yield s
    s.close()


def pool_server(stack: Stack, binder: Binder) -> subprocess.Popen:
    env = _env(ZEXEC_SERVER_BROKER_URL=stack.backend, ZEXEC_SERVER_POOL_URL=binder.url,
               ZEXEC_SERVER_POOL_POD="zexec-pool-p1", ZEXEC_SERVER_POOL_KEY="k1",
               ZEXEC_SERVER_WORKERS="1",
               ZEXEC_SERVER_READY_FILE=str(stack.workdir / "pool.ready"))
    log = open(stack.workdir / "server-pool.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "zexec.apps.server"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.servers["pool"] = proc
    return proc


def test_a_pool_server_waits_for_its_user_then_serves_them(broker):
    alice = user_id_for("alice")
    binder = Binder(2, (200, {"user_id": alice,
                              "credential": server_credential(SECRET.encode(), alice)}))
    try:
        proc = pool_server(broker, binder)
        ready = broker.workdir / "pool.ready"
        wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=60,
                 what="the pool server to register")
        assert proc.poll() is None, broker.log("server-pool")
        assert len(binder.asked) == 3
        assert binder.asked[0][:2] == ("/rexec/pool/bind", "Bearer k1")
        assert binder.asked[0][2]["pod"] == "zexec-pool-p1"
        with zexec.Client(broker.frontend, broker.tokens["alice"]) as c:
            assert c.call(pow, 2, 8) == 256
        # Registered: it says so (its user's status is ready before the probe sees it).
        wait_for(lambda: binder.registered, timeout=30, what="the registered notice")
        assert binder.registered == [("Bearer k1", {"pod": "zexec-pool-p1"})]
        with zexec.Client(broker.frontend, broker.tokens["bob"]) as c, \
                pytest.raises(zexec.ZexecError):
            c.call(pow, 2, 8)  # bob has no server: the pool server is alice's only
    finally:
        binder.close()


def test_a_refused_binding_stops_the_pool_server(broker):
    binder = Binder(0, (403, {"detail": "pool binding refused: already bound"}))
    try:
        proc = pool_server(broker, binder)
        assert proc.wait(60) != 0
        assert "already bound" in broker.log("server-pool")
        assert not (broker.workdir / "pool.ready").exists()
    finally:
        binder.close()
