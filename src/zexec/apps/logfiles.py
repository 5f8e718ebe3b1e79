"""Log plumbing every zexec process shares: a log file the process rotates itself, a
limit on repeated lines, and access-log lines without query strings.

* :class:`ProcessLogFile` is a size-rotated log file that also carries the process's
  stdout and stderr (``dup2``), so tracebacks, ``print``s and faulthandler dumps land in
  the same file as the log lines and move with it on rotation: a flood cannot fill the
  disk, and no second writer keeps appending to a rotated-away file.
* :class:`RepeatLimit` lets through at most ``burst`` records of one kind (logger, level
  and message template) per ``interval`` seconds and says how many it held back on the
  next one it lets through: a peer that provokes the same warning thousands of times a
  second costs a few lines, and the lines still say it happened.
* :class:`StripQuery` removes the query string from uvicorn's access-log lines: a token
  sent by mistake as ``?token=...`` must never reach a log file.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from logging.handlers import RotatingFileHandler


class ProcessLogFile(RotatingFileHandler):
    """A :class:`RotatingFileHandler` whose file is also the process's fds 1 and 2."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._adopt_std_streams()

    def _adopt_std_streams(self) -> None:
        if self.stream is None:
            return
        for std in (sys.stdout, sys.stderr):
            try:
                std.flush()
            except (OSError, ValueError):
                pass
        fd = self.stream.fileno()
        os.dup2(fd, 1)
        os.dup2(fd, 2)

    def doRollover(self) -> None:  # noqa: N802 (logging's name)
        super().doRollover()
        self._adopt_std_streams()

    def shouldRollover(self, record: logging.LogRecord) -> bool:  # noqa: N802
        # Output written to fds 1/2 grows the file behind the handler's back: ask the
        # file itself, not the handler's own count.
        if self.stream is None or self.maxBytes <= 0:
            return False
        try:
            return os.fstat(self.stream.fileno()).st_size >= self.maxBytes
        except OSError:
            return False


class RepeatLimit(logging.Filter):
    """At most ``burst`` records per kind per ``interval`` seconds (0 disables)."""

    def __init__(self, burst: int, interval: float, clock=time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        #: kind -> [window start, records let through in it, records held back]
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.burst <= 0 or self.interval <= 0:
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            state = self._seen.get(kind)
            if state is None or now - state[0] >= self.interval:
                held = int(state[2]) if state else 0
                if len(self._seen) > 10_000:  # bounded: kinds are templates, not values
                    self._seen.clear()
                self._seen[kind] = [now, 1, 0]
                if held:
                    record.msg = f"{record.msg} [{held} more like this held back]"
                return True
            if state[1] < self.burst:
                state[1] += 1
                return True
            state[2] += 1
            return False


class StripQuery(logging.Filter):
    """Drops ``?...`` from the path of uvicorn's access-log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = args[2]
            if "?" in path:
                record.args = (*args[:2], path.split("?", 1)[0], *args[3:])
        return True
