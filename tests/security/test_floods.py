"""Floods at the client port (issue 8, points 2 and 3): tokenless big frames, one huge
frame behind a garbage token, a message of 200,000 frames, random tokens from 60
connections. Each runs while bob (another user) keeps calling, and ends with the broker
alive, bob answered and the broker's peak memory within its budget."""

from __future__ import annotations

import os
import pickle
import threading
import time

import pytest

from tests.helpers.attacks import MIB, Bystander, MemoryWatch, assert_alive, bob_calls
from tests.helpers.raw_zmtp import Closed, RawPeer, stream_frame
from zexec.core import protocol as p
from zexec.core import zmtp
from zexec.core.broker.router import LEGACY_BAD_TOKEN

pytestmark = pytest.mark.timeout(240)

#: The broker's pre-auth total (64 MiB) plus what an interpreter's arenas wobble by.
PREAUTH_BUDGET = 64 * MIB + 48 * MIB


def run_all(jobs) -> None:
    threads = [threading.Thread(target=j, daemon=True) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


def test_tokenless_big_frames_stay_within_the_preauth_budget(stack):
    watch = MemoryWatch(stack)
    closed = []

    def giant_token_frame(source: str) -> None:
        # Frame 1 is where a legacy token goes: announced as 4 GiB, then streamed.
        peer = RawPeer(stack.ports[0], source=source)
        peer.send_raw(zmtp.frame_header(0, True))  # the delimiter
        sent = stream_frame(peer, 2**32 - 1, deadline=time.monotonic() + 5)
        closed.append(peer.wait_closed(5) or sent < 2**32 - 1)
        peer.close()

    def small_frames_never_a_token(source: str) -> None:
        # A v1 head of frames each under the token limit, never reaching the token.
        peer = RawPeer(stack.ports[0], source=source)
        try:
            peer.send_raw(zmtp.frame_header(0, True) + zmtp.frame_header(4, True) + p.MAGIC)
            for _ in range(64):
                peer.send_raw(b"\x03" + (16 * 1024).to_bytes(8, "big") + bytes(16 * 1024))
        except OSError:
            pass
        # Closed over its budget, or at the latest when it has shown no valid token
        # within the pre-auth timeout (10 s); what it sent after its garbage "token" was
        # read and dropped, never held.
        closed.append(peer.wait_closed(30))
        peer.close()

    with Bystander(stack):
        run_all([lambda i=i: giant_token_frame(f"127.0.0.{10 + i}") for i in range(8)] +
                [lambda i=i: small_frames_never_a_token(f"127.0.0.{30 + i}") for i in range(8)])
    assert all(closed), "a tokenless peer was allowed to go on"
    assert watch.growth < PREAUTH_BUDGET, f"broker grew by {watch.growth / MIB:.0f} MiB"
    assert_alive(stack)
    bob_calls(stack)


def test_one_huge_frame_behind_a_garbage_token(stack):
    """The legacy shape ``[b"", token, fn, args]`` with a 1 GiB ``fn``: the token is refused
    before the frame is read, the frame is read and dropped (never held), and the client
    gets the legacy refusal."""
    watch = MemoryWatch(stack)
    peer = RawPeer(stack.ports[0], source="127.0.0.7")
    with Bystander(stack) as bob:
        peer.send_raw(zmtp.frame_header(0, True) + zmtp.frame_header(13, True)
                      + b"garbage-token")
        stream_frame(peer, 1 << 30, more=True)  # fn: 1 GiB
        peer.send([pickle.dumps(())])  # args, the last frame
        reply = peer.recv(60)
    assert reply is not None and pickle.loads(reply[-1]) == LEGACY_BAD_TOKEN
    assert bob.done > 0
    assert watch.growth < PREAUTH_BUDGET, f"broker grew by {watch.growth / MIB:.0f} MiB"
    peer.close()
    assert_alive(stack)


def test_a_message_of_200000_frames_is_refused_naming_the_limit(stack):
    watch = MemoryWatch(stack)
    call_id = os.urandom(16)
    head = [b"", p.MAGIC, p.CALL, stack.tokens["alice"].encode(), call_id, b"{}", b"fn"]
    frames = b"\x01\x00" * 199_999 + b"\x00\x00"

    def encoded(head: list[bytes]) -> bytes:
        return b"".join(zmtp.frame_header(len(f), True) + f for f in head) + frames

    with Bystander(stack):
        # Authenticated (alice's own token): read to its end, refused with the limit.
        peer = RawPeer(stack.ports[0])
        peer.send_raw(encoded(head))
        reply = peer.recv(60)
        # Unauthenticated: closed once past the limit, without an answer.
        stranger = RawPeer(stack.ports[0], source="127.0.0.9")
        bad = [b"", p.MAGIC, p.CALL, b"nobody", call_id]
        try:
            stranger.send_raw(encoded(bad))
        except OSError:
            pass
        assert stranger.wait_closed(30)
    ev = p.parse_client_bound(reply[1:])
    assert ev.kind == "error" and ev.header["code"] == "TOO_LARGE"
    assert "ZEXEC_BROKER_MAX_FRAMES" in ev.header["message"]
    assert watch.growth < PREAUTH_BUDGET
    assert_alive(stack)


def test_random_token_flood_from_60_connections(stack):
    """60 connections (from 6 addresses) sending calls with random tokens as fast as
    they can: each connection is closed after a few failures (and reconnects); bob's
    calls are answered throughout; the log says so in a few lines, not one per token."""
    log = stack.workdir / "broker.log"
    log_before = log.stat().st_size
    watch = MemoryWatch(stack)
    stop = time.monotonic() + 4
    sent = [0]
    fn, args = pickle.dumps(None), pickle.dumps(())

    def flood(source: str) -> None:
        while time.monotonic() < stop:
            try:
                peer = RawPeer(stack.ports[0], source=source, timeout=5)
                while time.monotonic() < stop:
                    peer.send([b"", os.urandom(12).hex().encode(), fn, args])
                    sent[0] += 1
                    peer.recv(0)
            except (Closed, OSError):
                pass

    with Bystander(stack) as bob:
        run_all([lambda i=i: flood(f"127.0.1.{i % 6 + 1}") for i in range(60)])
    assert sent[0] > 60 * 4
    assert bob.done > 0
    counts = stack.control_command(b"STATUS")["status"]["gateway"]["counts"]
    assert counts.get("closed_for_bad_tokens", 0) >= 60
    log_growth = log.stat().st_size - log_before
    assert log_growth < 64 * 1024, f"the broker logged {log_growth} bytes during the flood"
    assert watch.growth < PREAUTH_BUDGET
    assert_alive(stack)
    bob_calls(stack)
