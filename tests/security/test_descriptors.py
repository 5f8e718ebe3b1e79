"""File descriptors (issue 8, point 4): idle connections used to lock out every new
client and spin the broker at 100% CPU once its open-files limit was reached. Now the
broker raises its soft limit to the hard one at start (and logs it), stops accepting when
descriptors run out (no spinning on a listener it cannot accept from), closes the
longest-idle connections without a call in flight to make room, and serves new clients
again."""

from __future__ import annotations

import resource
import time

import pytest

from tests.helpers.attacks import MIB, MemoryWatch, assert_alive, bob_calls
from tests.helpers.procs import cpu_seconds
from tests.helpers.raw_zmtp import Closed, RawPeer
from tests.helpers.stack import Stack, wait_for
from zexec.core import protocol as p

pytestmark = pytest.mark.timeout(180)

LIMIT = 256


def low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def test_idle_connections_under_a_low_open_files_limit(tmp_path):
    s = Stack(tmp_path, broker_preexec=low_limit)
    peers: list[RawPeer] = []
    try:
        s.start_broker()
        s.start_server("bob", workers=1)
        assert f"open files limit: {LIMIT}" in s.log("broker")
        bob_calls(s)
        watch = MemoryWatch(s)
        # Idle peers until the broker has no descriptor left (the kernel still completes
        # TCP handshakes into the listen backlog, so some of these wait there): half of
        # them say nothing, half showed a valid token first (a PING) and went quiet.
        ping = p.v1_ping(s.tokens["bob"], [])
        for i in range(LIMIT + 64):
            try:
                peer = RawPeer(s.ports[0], source=f"127.0.2.{i % 200 + 1}",
                               handshake=i % 2 == 0, timeout=2)
                if i % 2 == 0:
                    peer.send(ping)
                peers.append(peer)
            except (OSError, Closed):
                break
        wait_for(lambda: "out of file descriptors" in s.log("broker"),
                 what="the broker to run out of descriptors")
        # Not spinning while it cannot accept.
        before = cpu_seconds(s.broker.pid)
        time.sleep(2.0)
        used = cpu_seconds(s.broker.pid) - before
        assert used < 1.0, f"the broker used {used:.2f}s of CPU in 2s while saturated"
        # A new client is served: the longest-idle connections were closed for it.
        bob_calls(s, n=3)
        evicted = s.control_command(b"STATUS")["status"]["gateway"]["counts"].get("evicted", 0)
        assert evicted > 0
        assert watch.growth < 64 * MIB, f"broker grew by {watch.growth / MIB:.0f} MiB"
        assert_alive(s)
    finally:
        for peer in peers:
            peer.close()
        s.close()
