"""No silent forever: a call without a timeout whose worker is stopped (SIGSTOP) ends
with ``zexec.WorkerDied`` saying so, once the worker has been stopped for
``ZEXEC_SERVER_STOPPED_TIMEOUT`` seconds; a worker stopped for less and continued
finishes its call. Real broker, real server, real workers; both dispatch paths (workers
taking calls from the broker directly, and fresh-process mode through the server)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

import zexec
from tests.helpers.remote_funcs import stop_myself
from tests.helpers.stack import Stack, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("fresh", [False, True], ids=["direct", "fresh-process"])
def test_a_call_to_a_stopped_worker_ends_with_a_clear_error(tmp_path, fresh):
    s = Stack(tmp_path)
    try:
        s.start_broker()
        s.start_server("alice", workers=1, ZEXEC_SERVER_STOPPED_TIMEOUT="1",
                       ZEXEC_SERVER_FRESH_PROCESS=str(fresh).lower())
        with zexec.Client(s.frontend, s.tokens["alice"]) as c:
            with pytest.raises(zexec.WorkerDied, match=r"stopped \(SIGSTOP\) for 1s and was "
                               "killed.*ZEXEC_SERVER_STOPPED_TIMEOUT"):
                c.call(stop_myself)  # no timeout: without the watch this waits for ever
            assert c.call(pow, 3, 2) == 9  # a fresh worker took its place
        assert "stopped (SIGSTOP) for 1s" in s.log("server-alice")
    finally:
        s.close()


def test_a_worker_continued_before_the_limit_finishes_its_call(tmp_path):
    s = Stack(tmp_path)
    try:
        s.start_broker()
        s.start_server("alice", workers=1, ZEXEC_SERVER_STOPPED_TIMEOUT="600")
        pidfile = tmp_path / "worker.pid"

        def stopped_then_report(path):
            import os
            import time

            with open(path + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(path + ".tmp", path)
            while os.path.exists(path):  # the test stops us meanwhile, then removes it
                time.sleep(0.01)
            return "done"

        with zexec.Client(s.frontend, s.tokens["alice"]) as c:
            result: list = []
            t = threading.Thread(target=lambda: result.append(
                c.call(stopped_then_report, str(pidfile))))
            t.start()
            pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(),
                               what="the worker's pid"))
            os.kill(pid, signal.SIGSTOP)
            wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "T",
                     what="the worker to be stopped")
            pidfile.unlink()
            os.kill(pid, signal.SIGCONT)
            t.join(60)
            assert result == ["done"]
    finally:
        s.close()
