"""send_frames/recv_frames on an inproc pair: every frame kind arrives intact, and a
socket class with its own ``send`` (an asyncio socket) is sent through it."""

from __future__ import annotations

import numpy as np
import pytest
import zmq

from zexec.adapters.transport_zmq.frames import ZERO_COPY_MIN, recv_frames, send_frames


@pytest.fixture
def pair():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
    b.bind("inproc://frames")
    a.connect("inproc://frames")
    yield a, b
    a.close(0)
    b.close(0)
    ctx.term()


def test_every_kind_of_frame_arrives_intact(pair):
    a, b = pair
    big = np.arange(ZERO_COPY_MIN, dtype=np.uint8)
    frames = [b"", b"x" * 10, bytearray(b"ba"), memoryview(b"mv"), big,
              bytes(ZERO_COPY_MIN + 1), zmq.Frame(b"zf")]
    send_frames(a, frames)
    got = recv_frames(b, copy_first=3)
    assert [bytes(f) for f in got] == [bytes(memoryview(f)) if not isinstance(f, zmq.Frame)
                                       else f.bytes for f in frames]


def test_a_socket_class_with_its_own_send_is_used(pair):
    a, b = pair
    sent = []

    class Watched(zmq.Socket):
        def send(self, data, flags=0, copy=True, track=False, **kw):
            sent.append(bytes(data))
            return super().send(data, flags, copy=copy, track=track, **kw)

    w = Watched.shadow(a.underlying)
    send_frames(w, [b"one", b"two"])
    assert sent == [b"one", b"two"]
    assert recv_frames(b) == [b"one", b"two"]
