"""Buffers for large frames: one per frame, of the size its header announced.

A frame larger than the codec's inline limit is received straight from the socket into
its own buffer (the one copy, kernel to user space) and handed on as that buffer, which
the next ``sendmsg`` sends without copying. Big buffers are anonymous ``mmap``s: their
pages are touched only as bytes arrive (no zero-filling first), they get transparent huge
pages, and they go back to the kernel the moment the last reference goes (a malloc
arena would keep them).

:class:`PayloadBudget` counts the bytes of buffers still alive (a ``weakref.finalize``
per buffer, so "alive" means really referenced by someone: a queue, the router, an
output queue), which lets the gateway stop reading large frames while the broker holds
its budget's worth.
"""

from __future__ import annotations

import mmap
import weakref
from collections.abc import Callable

from zexec.adapters.hugepages import advise

#: Frames at least this large get an ``mmap`` (below, a bytearray is cheaper to make).
MMAP_MIN = 1 << 20
#: And huge pages from this size.
HUGE_MIN = 2 << 20


class Payload(bytearray):
    """A bytearray that can be watched (bytearray itself takes no weak references)."""

    __slots__ = ("__weakref__",)


def allocate(size: int, huge: bool = True) -> Payload | mmap.mmap:
    """A writable buffer of exactly ``size`` bytes for one frame's body; with ``huge``,
    in transparent huge pages. Huge pages make the broker's relaying of large payloads
    faster but a client's large results slower and erratic, so the SDK asks for none."""
    if size < MMAP_MIN:
        return Payload(size)
    # Private: a shared anonymous mapping would be shmem, without huge pages.
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge and size >= HUGE_MIN:
        advise(buf)
    return buf


class PayloadBudget:
    """Bytes in live large-frame buffers, against ``limit``. ``on_free`` runs (in
    whichever thread drops a buffer's last reference) after one is freed."""

    def __init__(self, limit: int, on_free: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.live = 0
        self.on_free = on_free

    def fits(self, size: int) -> bool:
        """Whether a buffer of ``size`` may be made now. One always may when none is
        alive, so a frame larger than the budget (but within the frame limit) still
        passes, alone."""
        return self.live == 0 or self.live + size <= self.limit

    def allocate(self, size: int) -> Payload | mmap.mmap:
        buf = allocate(size)
        self.live += size
        weakref.finalize(buf, self._freed, size)
        return buf

    def _freed(self, size: int) -> None:
        self.live -= size
        if self.on_free is not None:
            self.on_free()


def size_text(n: int) -> str:
    """``n`` bytes for a message: ``2 GiB``, ``64 KiB``, ``100 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"
