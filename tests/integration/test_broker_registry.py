"""The broker's registered servers as the Kubernetes orchestrator reads them: the control
port's ``SERVER user_id`` command through :class:`BrokerControlClient`, against a real
broker and real servers (``ZEXEC_SERVER_NAME`` is what a pod sets to its own name)."""

from __future__ import annotations

import signal

import pytest

from tests.helpers.stack import ADMIN, Stack, free_port, wait_for
from zexec.adapters.transport_zmq.control_client import BrokerControlClient
from zexec.apps.devidp.tokens import user_id_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def named(tmp_path):
    s = Stack(tmp_path)
    s.start_broker()
    s.start_server("alice", workers=1, ZEXEC_SERVER_NAME="zexec-server-abc-x1")
    yield s
    s.close()


def registry(s: Stack, token: str = ADMIN) -> BrokerControlClient:
    return BrokerControlClient("127.0.0.1", s.ports[2], token)


def test_a_registered_server_is_known_by_the_name_it_sends(named):
    info = registry(named).server_info(user_id_for("alice"))
    assert info is not None and info["name"] == "zexec-server-abc-x1"
    assert info["stopping"] is False and info["pid"] == named.servers["alice"].pid
    assert registry(named).server_info(user_id_for("bob")) is None  # none registered
    assert registry(named).server_info("") is None


def test_a_gone_server_is_forgotten(named):
    named.kill_server("alice", signal.SIGKILL)
    # The broker drops a server after its TTL without heartbeats.
    wait_for(lambda: registry(named).server_info(user_id_for("alice")) is None,
             timeout=30, what="the broker to drop the killed server")


def test_server_without_a_user_id_is_a_clear_error(named):
    assert named.control_command(b"SERVER") == {
        "ok": False, "error": "SERVER takes one argument, a user id"}


def test_without_the_admin_token_nothing_is_said(named):
    assert registry(named, "wrong-token").server_info(user_id_for("alice")) is None
    assert "refused an unauthenticated control command" in named.log("broker")


def test_no_broker_is_an_answer_of_none_soon(tmp_path):
    """A broker that is down (or a port nobody listens on) costs the caller its timeout,
    not a hang, and reads as "not known" (the pod's Ready condition decides)."""
    quiet = BrokerControlClient("127.0.0.1", free_port(), ADMIN, timeout=0.3)
    assert quiet.server_info("someone") is None  # returns (the module's timeout bounds it)
    assert "test-admin-token" not in repr(quiet)
