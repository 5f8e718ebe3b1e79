"""The log plumbing every process shares (zexec.apps.logfiles): repeated lines held
back, query strings stripped, and a log file the process rotates itself with its stdout
and stderr following it."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from zexec.apps.logfiles import RepeatLimit, StripQuery


def record(msg: str, *args, name: str = "zexec.broker", level: int = logging.WARNING):
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeat_limit_holds_back_a_flood_and_says_so_later():
    clock = Clock()
    limit = RepeatLimit(burst=3, interval=60, clock=clock)
    passed = [limit.filter(record("bad token from %s", f"peer{i}")) for i in range(1000)]
    assert passed.count(True) == 3  # one kind, whatever the arguments
    assert limit.filter(record("another kind %s", 1))  # other kinds are not held back
    clock.now = 61
    nxt = record("bad token from %s", "peer")
    assert limit.filter(nxt)
    assert "[997 more like this held back]" in nxt.getMessage()
    again = record("bad token from %s", "peer")
    assert limit.filter(again) and "held back" not in again.getMessage()


def test_repeat_limit_zero_lets_everything_through():
    limit = RepeatLimit(burst=0, interval=60)
    assert all(limit.filter(record("x")) for _ in range(100))


def test_strip_query_removes_the_query_from_access_lines():
    rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                            '%s - "%s %s HTTP/%s" %d',
                            ("127.0.0.1:5", "GET", "/status/?token=secret", "1.1", 200), None)
    assert StripQuery().filter(rec)
    assert rec.getMessage() == '127.0.0.1:5 - "GET /status/ HTTP/1.1" 200'


def test_the_process_rotates_its_log_and_its_stdout_follows(tmp_path):
    log = tmp_path / "p.log"
    script = textwrap.dedent(f"""
        import logging, os, sys
        os.environ.update(ZEXEC_LOG_FILE={str(log)!r}, ZEXEC_LOG_MAX_BYTES="4000",
                          ZEXEC_LOG_BACKUPS="2", ZEXEC_LOG_REPEAT_BURST="0")
        from zexec.apps.runtime import configure_logging
        configure_logging()
        for i in range(200):
            logging.getLogger("t").info("line %d %s", i, "x" * 40)
        print("printed-last", flush=True)
        os.write(2, b"raw-stderr-last\\n")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""  # everything went to the file
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["p.log", "p.log.1", "p.log.2"]  # rotated, two backups kept
    current = log.read_text()
    assert "printed-last" in current and "raw-stderr-last" in current
    assert all(p.stat().st_size < 8000 for p in tmp_path.iterdir())
