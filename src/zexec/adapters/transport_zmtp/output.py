"""What waits to be written to one stream: ZMTP messages as buffers, written with
``sendmsg`` as far as the socket takes them.

Small parts are joined (up to 64 KiB, grown in place) so a burst of small replies is one
iovec and one syscall; large frames stay views of their own buffers (never copied); a
part written halfway is replaced by a view of its rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import Any

from zexec.adapters.transport_zmtp.stream import IOV_MAX, Stream
from zexec.core import zmtp

#: Small parts are joined up to this size.
COALESCE = 64 * 1024


class Output:
    def __init__(self) -> None:
        self.parts: deque[Any] = deque()
        self.bytes = 0

    def __bool__(self) -> bool:
        return bool(self.parts)

    def add(self, part: Any) -> None:
        """Queue ``part`` (bytes, or a byte-format buffer)."""
        parts = self.parts
        size = len(part)
        self.bytes += size
        if parts and type(part) is bytes and type(parts[-1]) in (bytes, bytearray) and \
                len(parts[-1]) + size <= COALESCE:
            if type(parts[-1]) is bytes:
                parts[-1] = bytearray(parts[-1])
            parts[-1] += part
            return
        parts.append(part)

    def add_message(self, frames: Sequence[Any]) -> None:
        for part in zmtp.encode_message(frames):
            self.add(part)

    def write(self, stream: Stream) -> int:
        """Write as much as ``stream`` takes now; returns how many bytes (raises
        :class:`~zexec.adapters.transport_zmtp.stream.StreamClosed`)."""
        parts = self.parts
        total = 0
        while parts:
            n = stream.send(list(islice(parts, IOV_MAX)) if len(parts) > 1 else [parts[0]])
            if n == 0:
                break
            total += n
            self.bytes -= n
            while n:
                head = parts[0]
                size = len(head)
                if n >= size:
                    parts.popleft()
                    n -= size
                else:
                    parts[0] = memoryview(head)[n:]
                    n = 0
        stream.flush()
        return total

    def clear(self) -> None:
        self.parts.clear()
        self.bytes = 0
