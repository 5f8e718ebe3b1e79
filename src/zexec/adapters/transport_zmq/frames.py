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


#: pyzmq's ``Socket.send`` is a Python wrapper (for DRAFT routing ids and groups) around
#: the backend's; a worker's event is a dozen frames, and the wrapper cost as much as the
#: sends themselves (13 small frames: 25 us -> 11 us). Used for plain sockets only: a
#: subclass that overrides ``send`` (an asyncio socket) keeps its own.
_BACKEND_SEND = getattr(getattr(zmq, "backend", None), "Socket", zmq.Socket).send
_SUGAR_SEND = zmq.Socket.send


def send_frames(sock: zmq.Socket, frames: Sequence[Any], flags: int = 0) -> None:
    """Send one multipart message. With ``NOBLOCK`` raises ``zmq.Again`` before any
    frame is queued, never halfway (ZeroMQ queues a message atomically)."""
    last = len(frames) - 1
    send = _BACKEND_SEND if type(sock).send is _SUGAR_SEND else type(sock).send
    for i, frame in enumerate(frames):
        if type(frame) is bytes:
            copy = len(frame) < ZERO_COPY_MIN
        else:
            copy = not isinstance(frame, zmq.Frame) and memoryview(frame).nbytes < ZERO_COPY_MIN
        send(sock, frame, (flags if i == 0 else 0) | (SNDMORE if i < last else 0), copy=copy)


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
