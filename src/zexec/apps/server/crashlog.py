"""What a worker leaves behind when it dies mid-call, for its server to report.

A worker batches a call's printed output and sends it every few milliseconds; a crash
(a segfault in native code, ``os._exit``, the OOM killer's SIGKILL) runs no Python code
on the way out, so output printed just before it would be lost. Instead, each worker
keeps a **spill**: a small file in the server's private directory, mapped into memory,
holding the running call's identity (client, call id, protocol), the sequence number of
its last event, and the output not yet sent. Writing it is a memory copy; the kernel
keeps the pages when the process dies, whatever killed it. The server reads the spill
when the worker's pidfd says it exited, sends the output, then the error that ends the
call (:meth:`zexec.adapters.transport_zmq.server_loop.ServerLoop._on_worker_exit`).

Beside it, ``faulthandler`` writes the Python stack of a fatal signal (SIGSEGV,
SIGABRT, ...) to a second file: where in the user's code the crash happened.

Output that the worker had already handed to ZeroMQ is not in the spill; it is lost only
if the process dies within the microseconds before ZeroMQ's I/O thread writes it out.

Layout of the spill (little-endian): ``magic(4) active(1) legacy(1) call_len(2)
client_len(2) pad(2) seq(4) unused(4) dropped(4)``, the call id and client id from
:data:`IDS_AT`, then the output from :data:`OUT_AT` as records ``channel(1) len(4) utf-8``
(channel 1 stdout, 2 stderr), then zeros (sent records are zeroed). A death in the
middle of writing a record (a SIGKILL from outside) can garble that one record only.
"""

from __future__ import annotations

import faulthandler
import mmap
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zexec.core import protocol as p
from zexec.core.exits import worker_died

MAGIC = b"ZXS1"
_HEADER = struct.Struct("<4sBBHHHIII")
IDS_AT = 64
OUT_AT = 1024
SIZE = 1024 * 1024
_RECORD = struct.Struct("<BI")  # channel (1 stdout, 2 stderr; 0 ends the list), length
_CHANNEL = {"stdout": 1, "stderr": 2}


class Spill:
    """The writing side, in the worker (calls are serialized by the worker's lock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, SIZE)  # sparse: pages exist only once written
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        self._out = 0
        self._dropped = 0
        self._header(active=0, legacy=0, call_len=0, client_len=0, seq=0)

    def _header(self, *, active: int, legacy: int, call_len: int, client_len: int,
                seq: int) -> None:
        _HEADER.pack_into(self._map, 0, MAGIC, active, legacy, call_len, client_len, 0, seq,
                          0, self._dropped)

    def begin(self, call_id: bytes, client_id: bytes, legacy: bool) -> None:
        """A call starts (ids longer than 960 bytes together are not recorded)."""
        self.flushed()
        if len(call_id) + len(client_id) > OUT_AT - IDS_AT:
            self._header(active=0, legacy=0, call_len=0, client_len=0, seq=0)
            return
        self._map[IDS_AT:IDS_AT + len(call_id)] = call_id
        at = IDS_AT + len(call_id)
        self._map[at:at + len(client_id)] = client_id
        self._header(active=1, legacy=int(legacy), call_len=len(call_id),
                     client_len=len(client_id), seq=0)

    def sent(self, seq: int) -> None:
        """The call's event ``seq`` went out."""
        struct.pack_into("<I", self._map, 12, seq)

    def output(self, channel: str, text: str) -> None:
        """Output not yet sent (kept until :meth:`flushed`). Called on every write to
        stdout/stderr, so it is one slice assignment (the bytes after the last record
        are zero: the end of the list)."""
        data = text.encode("utf-8", "replace")
        at = OUT_AT + self._out
        end = at + _RECORD.size + len(data)
        if end >= SIZE:  # full: keep what fits, count the rest as lost
            room = max(0, SIZE - 1 - at - _RECORD.size)
            self._dropped += len(data) - room
            struct.pack_into("<I", self._map, 20, self._dropped)
            if room == 0:
                return
            data, end = data[:room], SIZE - 1
        self._map[at:end] = _RECORD.pack(_CHANNEL[channel], len(data)) + data
        self._out = end - OUT_AT

    def flushed(self) -> None:
        """The output so far was sent: its bytes are zeroed (the list is empty)."""
        self._map[OUT_AT:OUT_AT + self._out] = bytes(self._out)
        self._out = self._dropped = 0
        struct.pack_into("<I", self._map, 20, 0)

    def end(self) -> None:
        """The call ended (its final event was sent)."""
        self._map[4] = 0


def open_crash_files(paths: list[str] | None) -> Spill | None:
    """In a worker: the spill, and the fatal-signal stack file for ``faulthandler``
    (``paths`` = [spill, stack], from the server's CONFIG; None: neither)."""
    if not paths:
        return None
    spill_path, stack_path = paths
    # faulthandler writes from its C signal handler: the file stays open for good.
    faulthandler.enable(open(stack_path, "w"), all_threads=False)  # noqa: SIM115
    return Spill(spill_path)


@dataclass(frozen=True)
class Leftover:
    """A dead worker's running call: who it was for, its last event's seq, and the
    output it had not sent (``dropped`` bytes of it did not fit)."""

    call_id: bytes
    client_id: bytes
    legacy: bool
    seq: int
    output: tuple[tuple[str, str], ...]
    dropped: int


def read_spill(path: str | os.PathLike[str]) -> Leftover | None:
    """The call a dead worker was running, or None (no call, no file, a torn header)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < OUT_AT:
        return None
    magic, active, legacy, call_len, client_len, _, seq, _, dropped = \
        _HEADER.unpack_from(data, 0)
    if magic != MAGIC or not active:
        return None
    call_id = data[IDS_AT:IDS_AT + call_len]
    client_id = data[IDS_AT + call_len:IDS_AT + call_len + client_len]
    segments: list[list[str]] = []
    at = OUT_AT
    while at + _RECORD.size <= len(data) and data[at] in (1, 2):
        channel, size = _RECORD.unpack_from(data, at)
        if at + _RECORD.size + size >= len(data):
            break  # torn: its header claims more than there is
        chunk = data[at + _RECORD.size:at + _RECORD.size + size]
        at += _RECORD.size + size
        name = "stdout" if channel == 1 else "stderr"
        text = chunk.decode("utf-8", "replace")
        if segments and segments[-1][0] == name:
            segments[-1][1] += text
        else:
            segments.append([name, text])
    return Leftover(call_id, client_id, bool(legacy), seq,
                    tuple((c, t) for c, t in segments), dropped)


# ---------------------------------------------------------------- the Python stack

_ZEXEC_DIR = str(Path(__file__).resolve().parents[2])
_FRAME = re.compile(r'\s*File "(?P<file>[^"]*)", line')


def fault_stack(path: str | os.PathLike[str], max_lines: int = 30) -> str:
    """The user's frames of the stack ``faulthandler`` wrote at a fatal signal (most
    recent call first), without zexec's own and the interpreter's start-up frames;
    "" when there is none."""
    try:
        text = Path(path).read_text("utf-8", "replace")
    except OSError:
        return ""
    frames = [line.rstrip() for line in text.splitlines()
              if (m := _FRAME.match(line)) and not m["file"].startswith(_ZEXEC_DIR)
              and not m["file"].startswith("<frozen ")]
    return "\n".join(frames[:max_lines])


# ---------------------------------------------------------------- the OOM killer


def cgroup_mounts() -> dict[str, str]:
    """``{"cgroup2": mount point, "memory": v1 memory controller's mount point}``."""
    found: dict[str, str] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or not rest:
            continue
        if rest[0] == "cgroup2":
            found.setdefault("cgroup2", fields[4])
        elif rest[0] == "cgroup" and "memory" in (rest[2] if len(rest) > 2 else "").split(","):
            found.setdefault("memory", fields[4])
    return found


def _counter(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def oom_counter_files() -> list[Path]:
    """The files whose ``oom_kill`` line counts the kernel's OOM kills in this process's
    memory cgroup (cgroup v2 ``memory.events``, v1 ``memory.oom_control``)."""
    mounts = cgroup_mounts()
    out = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "" and "cgroup2" in mounts:
            out.append(Path(mounts["cgroup2"], rel, "memory.events"))
        elif "memory" in controllers.split(",") and "memory" in mounts:
            out.append(Path(mounts["memory"], rel, "memory.oom_control"))
    return [p for p in out if _counter(p) is not None]


class OomWatch:
    """Tells whether the kernel's OOM killer struck in this process's memory cgroup
    since the last look. ``files`` default: :func:`oom_counter_files` (none readable:
    every answer is None, "cannot tell")."""

    def __init__(self, files: list[Path] | None = None) -> None:
        self.files = oom_counter_files() if files is None else files
        self._last = self._read()

    def _read(self) -> list[int | None]:
        return [_counter(p) for p in self.files]

    def killed(self) -> bool | None:
        """True if a counter grew since the last call (or creation), False if none did,
        None if there is nothing to read."""
        now = self._read()
        grew = [a is not None and b is not None and b > a for a, b in zip(self._last, now,
                                                                         strict=True)]
        known = any(v is not None for v in now)
        self._last = now
        if not known:
            return None
        return any(grew)


# ---------------------------------------------------------------- the server's report


@dataclass(frozen=True)
class Death:
    """A worker's death as the server reports it: the call it was running (from its
    spill; None when it ran none) and the message of the error that ends that call."""

    leftover: Leftover | None
    message: str

    def output(self, call_id: bytes, legacy: bool, seq: int) -> list[list[Any]]:
        """Client-bound bodies carrying the output the worker had not sent, numbered
        from ``seq`` (one per segment for legacy clients)."""
        left = self.leftover
        if left is None or not (left.output or left.dropped):
            return []
        segments = [list(s) for s in left.output]
        if left.dropped:
            segments.append(["stderr", f"\n[zexec: {left.dropped} more bytes of output "
                                       "written before the crash did not fit and are lost]\n"])
        if legacy:
            return [[p.legacy_payload(p.legacy_output(seq + i, c, t))]
                    for i, (c, t) in enumerate(segments)]
        return [p.v1_event(call_id, p.EV_OUTPUT, seq, {"out": segments})]


class Deaths:
    """Examines dead workers' crash files (then removes them), with an :class:`OomWatch`
    to tell an out-of-memory SIGKILL from a kill -9."""

    def __init__(self, oom: OomWatch | None = None) -> None:
        self.oom = oom if oom is not None else OomWatch()

    def examine(self, spill: Path, stack: Path, code: int | None) -> Death:
        oom = self.oom.killed()  # also after other deaths: the next one compares to now
        left = read_spill(spill)
        where = fault_stack(stack)
        for f in (spill, stack):
            f.unlink(missing_ok=True)
        message = worker_died(code, oom)
        if where:
            message += f"\n\nPython stack at the crash (most recent call first):\n{where}"
        return Death(left, message)
