"""Routing-id squatting: with libzmq's ROUTER a peer choosing an id the broker would
generate later (``0x00`` + glibc ``rand()``-derived counter, the same in every process)
aborted the broker when the next client connected, on every port (issue 8, point 1).
The broker now assigns every connection's key itself; peers' identities are ignored on
the client ports and are names of the gateway's own on the backend (unique, never
NUL-led)."""

from __future__ import annotations

import ctypes

import pytest
import zmq

import zexec
from tests.helpers.attacks import MIB, MemoryWatch, assert_alive, bob_calls
from tests.helpers.raw_zmtp import Closed, RawPeer
from tests.helpers.remote_funcs import my_client_id, my_worker_names
from tests.helpers.stack import wait_for

pytestmark = pytest.mark.timeout(180)


def glibc_rand_ids(bases: int = 8, per_base: int = 30) -> list[bytes]:
    """The ~240 ids of the original attack: ``0x00`` + each of the first glibc rand()
    values (seed 1) + k."""
    libc = ctypes.CDLL("libc.so.6")
    libc.srand(1)
    firsts = [libc.rand() for _ in range(bases)]
    return [b"\x00" + ((base + k) & 0xFFFFFFFF).to_bytes(4, "big")
            for base in firsts for k in range(per_base)]


def squat(ctx: zmq.Context, url: str, ids: list[bytes]) -> list[zmq.Socket]:
    socks = []
    for ident in ids:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTING_ID, ident)
        s.connect(url)
        socks.append(s)
    return socks


def counts(stack) -> dict:
    return stack.control_command(b"STATUS")["status"]["gateway"]["counts"]


def squat_everywhere_then_call(stack, ids: list[bytes]) -> None:
    watch = MemoryWatch(stack)
    ctx = zmq.Context()
    before = counts(stack).get("reserved_identity", 0)
    socks = []
    try:
        for url in (stack.frontend, stack.backend, stack.control):
            socks += squat(ctx, url, ids)
        tls = [RawPeer(stack.secure_port, identity=i, tls=True) for i in ids[:60]]
        # Every backend squatter was refused at its handshake (NUL-led names are
        # reserved); libzmq keeps retrying, the broker keeps refusing.
        wait_for(lambda: counts(stack).get("reserved_identity", 0) - before >= len(ids),
                 what="the backend squatters to be refused")
        # New connections after the squatters: the moment libzmq aborted before.
        for _ in range(5):
            bob_calls(stack, n=2)
            bob_calls(stack, n=2, tls=True)
        # The squatters on the client ports are ordinary connections: they can talk.
        peer = tls[0]
        peer.send([b"", b"not-a-token", b"fn", b"args"])
        assert peer.recv() is not None
        assert_alive(stack)
        # A connection costs little: hundreds of squatters, a few MiB.
        assert watch.growth < 64 * MIB, f"broker grew by {watch.growth / MIB:.0f} MiB"
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
    for peer in tls:
        peer.close()


def test_the_original_glibc_rand_squat_on_every_port(stack):
    squat_everywhere_then_call(stack, glibc_rand_ids())


def test_ids_learnt_from_inside_a_worker_cannot_be_squatted(stack):
    with zexec.Client(stack.frontend, stack.tokens["alice"]) as c:
        key = c.call(my_client_id)
    assert key[:1] == b"\x00" and len(key) == 9  # a key of the broker's, not libzmq's
    n = int.from_bytes(key[1:], "big")
    squat_everywhere_then_call(stack, [b"\x00" + (n + k).to_bytes(8, "big")
                                       for k in range(1, 121)] +
                               [b"\x00" + ((n + k) & 0xFFFFFFFF).to_bytes(4, "big")
                                for k in range(1, 121)])


def test_a_live_workers_name_is_refused_to_anyone_else(stack):
    with zexec.Client(stack.frontend, stack.tokens["alice"]) as c:
        names = c.call(my_worker_names)
        assert names, "the worker's broker link was not found"
        before = counts(stack).get("duplicate_identity", 0)
        for name in names:
            try:
                RawPeer(stack.ports[1], identity=name)
            except Closed:
                continue
            raise AssertionError(f"a second connection named {name!r} was accepted")
        assert counts(stack).get("duplicate_identity", 0) > before
        # The worker itself still gets alice's calls.
        assert [c.call(abs, -i) for i in range(5)] == list(range(5))
    assert_alive(stack)
