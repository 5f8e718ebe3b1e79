"""Fast multipart send/receive.

pyzmq's ``send_multipart``/``recv_multipart`` spend most of their time combining
``enum.IntFlag`` values per frame, several times what the send itself costs for a
message of small frames. These helpers do the same with plain ints. Receiving
copies the first ``copy_first`` frames into ``bytes`` (cheap for the small routing and
header frames the code inspects) and keeps later frames, the payloads, as zero-copy
``zmq.Frame`` objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

NOBLOCK = int(zmq.NOBLOCK)
SNDMORE = int(zmq.SNDMORE)
#: Payload frames at least this large are sent without copying; smaller ones are copied
#: (ZeroMQ's own zero-copy bookkeeping costs more than copying a few KiB).
ZERO_COPY_MIN = 64 * 1024


def send_frames(sock: zmq.Socket, frames: Sequence[Any], flags: int = 0) -> None:
    """Send one multipart message. With ``NOBLOCK`` raises ``zmq.Again`` before any
    frame is queued, never halfway (ZeroMQ queues a message atomically)."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        copy = not isinstance(frame, zmq.Frame) and (
            isinstance(frame, bytes) and len(frame) < ZERO_COPY_MIN
            or not isinstance(frame, bytes) and memoryview(frame).nbytes < ZERO_COPY_MIN
        )
        sock.send(frame, (flags if i == 0 else 0) | (SNDMORE if i < last else 0), copy=copy)


def recv_frames(sock: zmq.Socket, flags: int = 0, copy_first: int = 16) -> list[Any]:
    """Receive one multipart message (``zmq.Again`` with ``NOBLOCK`` when none waits).

    Frames are taken zero-copy and asked ``frame.more`` (a field, where ``RCVMORE`` is a
    getsockopt call per frame, as costly as the rest of the receive)."""
    frame = sock.recv(flags, copy=False)
    frames = [frame.bytes if copy_first > 0 else frame]
    i = 1
    while frame.more:
        frame = sock.recv(0, copy=False)
        frames.append(frame.bytes if i < copy_first else frame)
        i += 1
    return frames
