"""Attacks on the broker's front doors: real broker, servers and clients as processes on
loopback (tests/helpers/stack.py), hostile peers speaking raw ZMTP
(tests/helpers/raw_zmtp.py) or libzmq. Every test asserts the same three things after its
attack: the broker is alive, a legitimate user's calls are answered, and the broker's
memory stayed within its budget. Bounded by pytest's timeout, never by wall-clock
thresholds."""

from __future__ import annotations

import pytest

from tests.helpers.stack import Stack, wait_for
from zexec.apps.devidp.tokens import user_id_for


@pytest.fixture(scope="module")
def attack_stack(tmp_path_factory):
    """Broker + servers for alice (the attacker's own account, where one is needed) and
    bob (the bystander whose calls must keep being answered)."""
    s = Stack(tmp_path_factory.mktemp("attack"))
    s.start_broker()
    s.start_server("alice", workers=1)
    s.start_server("bob", workers=1)
    yield s
    s.close()


@pytest.fixture
def stack(attack_stack):
    """The module's stack, revived if a previous test killed part of it."""
    s = attack_stack
    if s.broker is None or s.broker.poll() is not None:
        s.start_broker()
    for user in ("alice", "bob"):
        def registered(user=user) -> bool:
            server = s.servers.get(user)
            if server is None or server.poll() is not None:
                s.servers.pop(user, None)
                s.start_server(user, workers=1)
            try:
                return user_id_for(user) in s.control_command(b"STATUS")["status"]["servers"]
            except Exception:
                return False
        wait_for(registered, what=f"{user}'s server")
    return s
