"""The server's pool of warm worker processes.

Workers are plain subprocesses (``python -m zexec.apps.server.worker``) rather than
multiprocessing children: nothing of the server's state (sockets, threads) is inherited,
and their death is observed through a pidfd the server's poller watches, so a crash is
noticed at once, not at the next timer tick.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zexec.adapters.hugepages import with_hugepages
from zexec.apps.server.crashlog import Death, Deaths

log = logging.getLogger("zexec.server")

#: Id of the worker a server starts before anything else (see :func:`start_worker`).
FIRST_WORKER = b"w0"


def private_endpoint() -> tuple[str, str]:
    """A new private directory (mode 0700: only this user may talk to the workers) and
    the workers' ipc endpoint in it."""
    directory = tempfile.mkdtemp(prefix="zexec-server-")
    os.chmod(directory, 0o700)
    return directory, f"ipc://{directory}/workers"


def start_worker(endpoint: str, wid: bytes, python: str = sys.executable) -> subprocess.Popen:
    """Start a worker process for the server's ipc ``endpoint``. It needs nothing else:
    it connects, says HELLO and gets its configuration over that channel, so a server
    can start its first worker before it has even read its settings (its imports then
    overlap the worker's). None of the server's ``ZEXEC_*`` settings, its credential
    among them, are passed on: the user's code runs in the workers. They get huge pages
    for large buffers (:mod:`zexec.adapters.hugepages`)."""
    env = {k: v for k, v in with_hugepages(os.environ).items()
           if not k.startswith("ZEXEC_")}
    return subprocess.Popen(
        [python, "-m", "zexec.apps.server.worker", endpoint, wid.decode(), str(os.getpid())],
        stdin=subprocess.DEVNULL, env=env,
    )


@dataclass(eq=False)
class WorkerProcess:
    wid: bytes
    proc: subprocess.Popen
    pidfd: int
    broker_id: bytes = b""  # its routing id on the broker's backend (direct dispatch)
    ready: bool = False
    task: Any = None  # the Task it runs, if any
    retired: bool = field(default=False)  # killed on purpose: its death is expected
    reason: str = ""  # why the server killed it, for the call it ran (if any)


class WorkerPool:
    def __init__(self, endpoint: str, size: int, flush_interval: float, flush_bytes: int,
                 python: str = sys.executable,
                 broker: tuple[str, str, str] | None = None) -> None:
        """``broker`` = (url, user id, credential) makes workers connect to the broker
        themselves: they take calls from it and send their events to it (direct
        dispatch, see :mod:`zexec.apps.server.worker`); None keeps both on the server's
        path."""
        if size < 1:
            raise ValueError("a server needs at least one worker")
        self.endpoint = endpoint
        self.size = size
        self.python = python
        #: What each worker is told when it says HELLO (over the private ipc channel,
        #: never through its environment or command line).
        self.config = {"flush_interval": flush_interval, "flush_bytes": flush_bytes,
                       "broker": list(broker) if broker is not None else None}
        self.workers: dict[bytes, WorkerProcess] = {}
        self.by_fd: dict[int, WorkerProcess] = {}
        self.by_broker_id: dict[bytes, WorkerProcess] = {}
        self._ids = itertools.count(1)
        #: Routing ids of this pool's workers on the broker start with it: unguessable,
        #: and unique to this server (the broker takes a worker only for the server
        #: whose registration names its prefix; a replacement server's w1 is another).
        self.worker_prefix = os.urandom(6).hex() + "-"
        self.deaths = Deaths()

    @property
    def direct(self) -> bool:
        """Whether workers take calls from the broker and send their events to it."""
        return self.config["broker"] is not None

    def config_for(self, w: WorkerProcess) -> dict[str, Any]:
        """What worker ``w`` is told when it says HELLO: ``broker`` is [url, user id,
        credential, its routing id] for direct dispatch; ``crash`` the files it leaves
        for the server if it dies (:meth:`crash_files`)."""
        config = {**self.config, "crash": [str(p) for p in self.crash_files(w)]}
        if self.direct:
            config["broker"] = [*self.config["broker"], w.broker_id.decode()]
        return config

    def death(self, w: WorkerProcess) -> Death:
        """What reaped worker ``w`` left behind: the call it was running and the error
        message that names how it died (see :mod:`zexec.apps.server.crashlog`)."""
        return self.deaths.examine(*self.crash_files(w), w.proc.returncode)

    def crash_files(self, w: WorkerProcess) -> tuple[Path, Path]:
        """Worker ``w``'s spill and fatal-signal stack files, in the server's private
        directory (see :mod:`zexec.apps.server.crashlog`)."""
        directory = Path(self.endpoint.removeprefix("ipc://")).parent
        return directory / f"{w.wid.decode()}.spill", directory / f"{w.wid.decode()}.stack"

    def spawn(self) -> WorkerProcess:
        wid = f"w{next(self._ids)}".encode()
        return self.adopt(start_worker(self.endpoint, wid, self.python), wid)

    def adopt(self, proc: subprocess.Popen, wid: bytes) -> WorkerProcess:
        """Take on a worker process started for this pool's endpoint (see
        :func:`start_worker`)."""
        # A random part per worker too: the prefix travels in REG, and the next id
        # must not be predictable (a peer holding it first would lock the worker out).
        w = WorkerProcess(wid, proc, os.pidfd_open(proc.pid),
                          f"{self.worker_prefix}{wid.decode()}-{os.urandom(4).hex()}".encode())
        self.workers[wid] = w
        self.by_fd[w.pidfd] = w
        self.by_broker_id[w.broker_id] = w
        return w

    def idle(self) -> WorkerProcess | None:
        for w in self.workers.values():
            if w.ready and w.task is None and not w.retired:
                return w
        return None

    def kill(self, w: WorkerProcess) -> None:
        """Kill a worker on purpose (cancel, deadline, fresh-process mode)."""
        w.retired = True
        w.ready = False
        try:
            os.kill(w.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def reap(self, fd: int) -> WorkerProcess:
        """Forget the worker whose pidfd became readable (it exited); returns it."""
        w = self.by_fd.pop(fd)
        self.workers.pop(w.wid, None)
        self.by_broker_id.pop(w.broker_id, None)
        os.close(fd)
        w.proc.wait()
        return w

    def close(self, grace: float = 2.0) -> None:
        """Stop every worker: idle ones with SIGTERM, so the events they queued for the
        broker still leave (up to ``grace`` seconds), busy ones (whose calls the server
        has ended) with SIGKILL."""
        for w in list(self.workers.values()):
            if w.task is None and not w.retired:
                try:
                    w.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
            else:
                self.kill(w)
        for w in list(self.workers.values()):
            try:
                w.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill(w)
                w.proc.wait()
            os.close(w.pidfd)
        self.workers.clear()
        self.by_fd.clear()
        self.by_broker_id.clear()
