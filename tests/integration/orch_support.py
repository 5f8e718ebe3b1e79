"""Helpers shared by the orchestrator tests: bounded polling, process checks, and a
stand-in for ``zexec.apps.server`` (touches its ready file, behaves by user id)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from zexec.adapters.orchestrator_local.isolation import Isolation

T = TypeVar("T")

SECRET = b"test-broker-secret"
PY = "{}.{}".format(*sys.version_info[:2])
#: The orchestrator tests exercise processes and builds, not isolation (tests/security does).
OFF = Isolation.off()


def wait_for(fn: Callable[[], T], *, timeout: float = 120.0, what: str = "") -> T:
    """Poll ``fn`` until it returns something truthy; fail (showing the last value)
    after ``timeout`` seconds. The bound only stops a hung test, it asserts no speed."""
    deadline = time.monotonic() + timeout
    last: T = fn()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or fn}: last {last!r}")
        time.sleep(0.02)
        last = fn()
    return last


STANDIN_SERVER = r'''
"""Stand-in server: argv[1] is a directory for its report; behaviour by user id."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

user = os.environ["ZEXEC_SERVER_USER_ID"]
ready = Path(os.environ["ZEXEC_SERVER_READY_FILE"])
report = {k: v for k, v in os.environ.items() if k.startswith("ZEXEC_")}
with os.fdopen(int(os.environ["ZEXEC_SERVER_CREDENTIAL_FD"]), "rb") as pipe:
    report["credential"] = pipe.read().decode()
report.update(executable=sys.executable, prefix=sys.prefix, pid=os.getpid())
try:
    import six  # noqa: F401
    report["six"] = True
except ImportError:
    report["six"] = False
try:
    import zexec
    report["zexec"] = zexec.__file__
except ImportError:
    report["zexec"] = None
# A worker, like the real server's pool: it must not outlive the server.
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
report["worker"] = worker.pid
if user.startswith("stubborn"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
tmp = Path(sys.argv[1]) / f"{user}.json.tmp"
tmp.write_text(json.dumps(report))
tmp.replace(Path(sys.argv[1]) / f"{user}.json")
if user.startswith("crash"):
    print("boom: the stand-in server crashed on purpose", flush=True)
    sys.exit(3)
if not user.startswith("slow"):
    ready.touch()
if user.startswith("idle"):
    time.sleep(float(os.environ["ZEXEC_SERVER_IDLE_TIMEOUT"]))
    worker.kill()
    sys.exit(0)
while True:
    time.sleep(3600)
'''

FAKE_UV = r'''
"""Fake uv: says it is installing, then hangs (to catch the installing phase)."""
import sys, time
print("Resolving and installing (fake uv):", *sys.argv[1:3], flush=True)
time.sleep(3600)
'''


def write_script(path: Path, text: str, interpreter: str) -> Path:
    path.write_text(f"#!{interpreter}\n{text}")
    path.chmod(0o755)
    return path
