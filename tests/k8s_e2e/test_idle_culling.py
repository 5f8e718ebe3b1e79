"""Idle culling on the cluster: a server that sees no call for the Deploy API's idle
timeout (``ZEXEC_DEPLOY_IDLE_TIMEOUT``, 30 s in this session) exits on its own; its pod
ends ``Succeeded`` and the user's status says ``terminated`` (idle), not failed."""

from __future__ import annotations

import pytest

import zexec
from tests.helpers.stack import wait_for
from tests.k8s_e2e.conftest import IDLE_TIMEOUT

pytestmark = pytest.mark.timeout(600)


def test_an_idle_server_exits_and_its_pod_succeeds(cluster):
    conn = zexec.connect(cluster.ep_url, cluster.tokens["dave"])
    try:
        conn.environment([], progress=False, timeout=300)
        assert conn.client.call(pow, 2, 4) == 16
        # While the server shuts down, its exec readiness probe may fail before the
        # container has exited: a moment of "starting" (Running, not Ready) can come first.
        st = wait_for(lambda: (s := conn.status()) and s["phase"] not in ("ready", "starting")
                      and s, timeout=IDLE_TIMEOUT + 120, interval=0.5,
                      what="the idle server to exit")
        assert st["phase"] == "terminated", st
        pod = cluster.pod_of("dave")
        assert pod["status"]["phase"] == "Succeeded"
        (server,) = pod["status"]["containerStatuses"]
        assert server["state"]["terminated"]["exitCode"] == 0
        assert cluster.containers_of("dave")["server"]["State"] == "exited"
        # A new call or spawn starts a server again.
        conn.environment([], progress=False, timeout=300)
        assert conn.client.call(pow, 3, 2) == 9
    finally:
        conn.terminate()
        conn.close()
