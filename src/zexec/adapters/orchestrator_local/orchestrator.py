"""LocalOrchestrator: one server process per user on this machine (the embedded default).

``ensure`` records the server as ``pending`` and returns; a background thread per server
then builds (or reuses) the digest's venv (``installing``), starts
``<env>/bin/python -m zexec.apps.server`` in its own process group (``starting``) and
waits for it to touch its ready file (``ready``). The same thread then waits for the
process: exiting 0 on its own (the server's idle timeout) shows ``terminated`` with
reason ``idle``; anything else ``failed`` with the exit status and the log's last lines.

Files under ``state_dir``: ``envs/`` (see :mod:`.envs`; built by the stack's uid,
readable by every user, writable by none), ``logs/<user>.log`` (installer and server
output; 0700 directory), ``run/<user>/ready``, ``servers/<user>.json`` (see
:mod:`.records`), ``uids.json`` (see :mod:`.uids`). ``<user>`` is the user id made
file-name safe. The users' working directories are elsewhere (``users_dir``, see
:mod:`.tenancy`).

Each server runs as :mod:`.isolation` says (its user's uid, a sandbox, both, or
neither). It gets a scrubbed environment: no ``ZEXEC_*`` variable of the Deploy API
reaches user code, only the ones a server needs, and its broker credential arrives over
an inherited pipe (``ZEXEC_SERVER_CREDENTIAL_FD``), not in the environment that
``/proc/<pid>/environ`` shows.

A restarted orchestrator (the Deploy API was killed) reads the records: a server that
still runs, is the process recorded (its start time), has registered with the broker
(its ready file), and was started for the same broker, credential, environment and
isolation is adopted and shows ``ready`` again; any other recorded process that still
runs (an interrupted build, a server it cannot trust) is stopped, so none is left
orphaned.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from zexec.adapters.hugepages import with_hugepages
from zexec.adapters.orchestrator_local import procs
from zexec.adapters.orchestrator_local import resources as local_resources
from zexec.adapters.orchestrator_local.envs import BuildCancelled, BuildFailed, EnvStore
from zexec.adapters.orchestrator_local.isolation import Isolation, resolve
from zexec.adapters.orchestrator_local.pythons import discover_pythons, find_uv, running_python
from zexec.adapters.orchestrator_local.records import Records
from zexec.adapters.orchestrator_local.recovery import Recovery
from zexec.adapters.orchestrator_local.servers import NEXT, Server, file_key, server_log
from zexec.adapters.orchestrator_local.tenancy import Tenancy
from zexec.adapters.orchestrator_local.uids import UidMap
from zexec.core import replacing
from zexec.core.errors import InvalidEnvironment
from zexec.core.model import EnvSpec, ServerStatus, UserIdentity
from zexec.core.protocol import server_credential
from zexec.core.resources import resources_dict

#: Server command when none is injected; ``{python}`` becomes the env's interpreter.
DEFAULT_SERVER_COMMAND = ("{python}", "-m", "zexec.apps.server")
#: Seconds between two looks for a starting server's ready file (a stat call): every
#: look missed is latency added to the user's first call.
READY_POLL = 0.01
_SCRUB = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE")
#: File creation mask of builds: environments readable by every user's uid.
BUILD_UMASK = 0o022

log = logging.getLogger("zexec.orchestrator")


class LocalOrchestrator(Recovery):
    """:class:`~zexec.core.ports.Orchestrator` running servers as local processes.

    ``available_pythons`` maps ``"X.Y"`` to an interpreter (None: discover them the first
    time a pin names another version than the running interpreter's, which discovery
    would map to the running interpreter anyway: the common pin costs no discovery, whose
    seconds of CPU would otherwise slow every start of the Deploy API on a small machine);
    ``server_command`` replaces the server command (tests use a stand-in; ``{python}`` in
    an item becomes the env's interpreter); ``zexec_args`` replaces what is installed for
    zexec itself (default: this source tree editable, else ``zexec==<version>``);
    ``start_timeout`` fails a server that is not ready in time (0 = wait for ever);
    ``grace`` is how long SIGTERM may take before SIGKILL; ``isolation`` keeps users
    apart (default: the strongest this machine allows, :func:`.isolation.resolve`),
    ``uids`` picks each user's uid when isolating by uid, ``users_dir`` holds the users'
    working directories (default ``<state_dir>/users``).
    """

    def __init__(
        self,
        state_dir: str | Path,
        broker_backend_url: str,
        server_secret: bytes,
        available_pythons: dict[str, str] | None = None,
        server_workers: int = 1,
        idle_timeout: float = 0.0,
        uv: str | None = None,
        clock: Callable[[], float] = time.time,
        *,
        server_command: Sequence[str] | None = None,
        zexec_args: Sequence[str] | None = None,
        start_timeout: float = 300.0,
        grace: float = 5.0,
        isolation: Isolation | None = None,
        uids: UidMap | None = None,
        users_dir: str | Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.broker_backend_url = broker_backend_url
        self._secret = server_secret
        self._pythons = dict(available_pythons) if available_pythons is not None else None
        self.server_workers = server_workers
        self.idle_timeout = idle_timeout
        self.uv = uv or find_uv()
        self.clock = clock
        self.server_command = list(server_command or DEFAULT_SERVER_COMMAND)
        self.start_timeout = start_timeout
        self.grace = grace
        self.isolation = isolation if isolation is not None else resolve("auto")
        self.tenancy = Tenancy(
            self.isolation, self.state_dir,
            Path(users_dir or self.state_dir / "users").resolve(), uids,
        )  # fmt: skip
        self.envs = EnvStore(self.state_dir / "envs", self.uv, zexec_args)
        os.chmod(self.envs.root, 0o755)
        (self.state_dir / "logs").mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.state_dir / "logs", 0o700)
        self.records = Records(self.state_dir / "servers")
        self._secret_digest = hashlib.sha256(self._secret).hexdigest()[:16]
        self._servers: dict[str, Server] = {}
        self._nexts: dict[str, Server] = {}  # replacements built beside a current server
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._discovering = threading.Lock()  # one discovery; the users' locks stay free
        self._recover()

    # ------------------------------------------------------------------ the port

    def ensure(self, user: UserIdentity, spec: EnvSpec, force: bool = False) -> ServerStatus:
        uid = user.user_id
        self.tenancy.admit(uid, user.username)
        with self._user_lock(uid):
            cur, nxt = self._servers.get(uid), self._nexts.get(uid)
            decision = replacing.plan_ensure(self._plain(cur), self._plain(nxt), spec, force)
            if decision == "conflict":
                raise replacing.conflict(uid, self._plain(cur), self._plain(nxt), spec)
            if decision == "keep-current" and nxt is not None:
                self._nexts.pop(uid)  # a failed replacement: the user is back
            if decision in ("keep-current", "keep-next"):
                return self._view(uid)
            interpreter = self._interpreter(spec.python)  # refuse before stopping anything
            local_resources.check(spec.resources)
            if nxt is not None:
                self._stop(self._nexts.pop(uid))
            if decision == "restart" and cur is not None:
                self._stop(cur)
            log = self.log_path(uid)
            if log.exists():  # one server's story per log; keep the previous one
                os.replace(log, log.with_name(log.name + ".1"))
            rec = Server(uid, file_key(uid), spec, interpreter, "pending", self.clock(),
                          beside=decision == "replace-beside")
            (self._nexts if rec.beside else self._servers)[uid] = rec
            rec.thread = threading.Thread(
                target=self._provision, args=(rec,), name=f"zexec-local-{rec.key}", daemon=True
            )
            first = self._view(uid)  # before the thread can move it on
            rec.thread.start()
            return first

    def terminate(self, user_id: str) -> bool:
        with self._user_lock(user_id):
            nxt = self._nexts.pop(user_id, None)
            if nxt is not None:
                self._stop(nxt)
            rec = self._servers.pop(user_id, None)
            if rec is not None:
                self._stop(rec)
            return rec is not None or nxt is not None

    def cancel(self, user_id: str, digest: str | None = None) -> bool:
        with self._user_lock(user_id):
            cur, nxt = self._servers.get(user_id), self._nexts.get(user_id)
            what = replacing.plan_cancel(self._plain(cur), self._plain(nxt), digest)
            if what is None:
                return False
            table = self._nexts if what == "next" else self._servers
            self._stop(table.pop(user_id))
            return True

    def status(self, user_id: str) -> ServerStatus | None:
        return self._view(user_id)

    def list(self) -> list[ServerStatus]:
        users = sorted({*self._servers, *self._nexts}, key=file_key)  # copies: ensure()
        views = [self._view(u) for u in users]                        # may insert meanwhile
        return [v for v in views if v is not None]

    # ------------------------------------------------------------------ extras

    def pythons(self) -> dict[str, str]:
        """``"X.Y"`` -> interpreter for the pins this machine can serve (discovered on
        the first call, a second or two)."""
        with self._discovering:
            if self._pythons is None:
                self._pythons = discover_pythons(self.uv)
            return dict(self._pythons)

    def log_path(self, user_id: str) -> Path:
        return server_log(self.state_dir, user_id)

    def close(self) -> None:
        """Stop every server (``zexec down``, Deploy API shutdown)."""
        for user_id in list(self._servers):
            self.terminate(user_id)

    # ------------------------------------------------------------------ internals

    def _user_lock(self, user_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(user_id, threading.Lock())

    def _interpreter(self, python: str) -> str:
        here, exe = running_python()
        if python == here and self._pythons is None:
            return exe  # what discovery would answer: the running interpreter comes first
        found = self.pythons()
        if python not in found:
            have = ", ".join(found) or "none"
            raise InvalidEnvironment(
                f"python=={python} is not available on this machine; available: {have}"
            )
        return found[python]

    def _view(self, user_id: str) -> ServerStatus | None:
        return replacing.view(self._plain(self._servers.get(user_id)),
                              self._plain(self._nexts.get(user_id)))

    def _plain(self, rec: Server | None) -> ServerStatus | None:
        return None if rec is None else self._snapshot(rec)

    def _snapshot(self, rec: Server) -> ServerStatus:
        with rec.lock:
            phase, reason, tail, since = rec.phase, rec.reason, rec.log_tail, rec.since
        if phase in ("installing", "starting"):
            tail = procs.tail(self.log_path(rec.user_id))  # live progress
        workers = rec.spec.resources.workers or self.server_workers
        return ServerStatus(rec.user_id, phase, rec.spec, reason, tail, since,
                            resources=local_resources.granted(rec.spec.resources, workers),
                            resources_note=local_resources.MEMORY_NOTE)

    def _set(self, rec: Server, phase: str, reason: str = "", tail: bool = False) -> None:
        log_tail = procs.tail(self.log_path(rec.user_id)) if tail else ()
        with rec.lock:
            if rec.stopped.is_set():
                return  # terminated or replaced: nobody may see this record change
            rec.phase, rec.reason, rec.log_tail, rec.since = phase, reason, log_tail, self.clock()

    def _stop(self, rec: Server) -> None:
        with rec.lock:
            rec.stopped.set()  # from here on no new child is started for rec
            proc = rec.proc
        if proc is not None:
            procs.stop(proc, self.grace)
        if rec.thread is not None and rec.thread is not threading.current_thread():
            rec.thread.join(timeout=self.grace + 30)
        if proc is not None:
            self.records.remove(rec.record_key, proc.pid)
        if rec.ready is not None:
            rec.ready.unlink(missing_ok=True)

    def _child_env(self, extra: dict[str, str], venv: Path | None = None) -> dict[str, str]:
        env = {
            k: v for k, v in with_hugepages(os.environ).items()
            if not k.startswith("ZEXEC_") and k not in _SCRUB
        }
        env["NO_COLOR"] = "1"
        if venv is not None:
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
        env.update(extra)
        return env

    def _start(self, rec: Server, cmd: Sequence[str], env: dict[str, str], log, *,
               role: str, cwd: Path | None = None, pass_fds: Sequence[int] = (),
               umask: int = -1, shown: str = "") -> bool:
        """Start ``cmd`` for ``rec`` (the log shows ``shown``, else the command)."""
        with rec.lock:  # paired with _stop: a stopped record never gets a new child
            if rec.stopped.is_set():
                return False
            log.write(f"$ {shown or ' '.join(cmd)}\n".encode())
            log.flush()
            rec.proc = procs.spawn(cmd, env=env, log=log, cwd=cwd or self.state_dir,
                                   pass_fds=pass_fds, umask=umask)
            self._record(rec, role)
            return True

    def _record(self, rec: Server, role: str) -> None:
        """Write down the child just started, before anything can kill this process."""
        assert rec.proc is not None and rec.tenant is not None
        self.records.write(rec.record_key, {
            "user_id": rec.user_id, "role": role, "pid": rec.proc.pid,
            "start": procs.start_time(rec.proc.pid), "since": self.clock(),
            "env": {"python": rec.spec.python, "requirements": list(rec.spec.requirements),
                    "digest": rec.spec.digest,
                    **({"resources": resources_dict(rec.spec.resources)}
                       if not rec.spec.resources.default else {})},
            "interpreter": rec.interpreter, "isolation": self.isolation.mode,
            "uid": rec.tenant.uid, "gid": rec.tenant.gid,
            "broker_url": self.broker_backend_url, "secret": self._secret_digest,
            "ready_file": str(rec.ready or rec.tenant.ready_file),
        })  # fmt: skip

    def _promote(self, rec: Server) -> bool:
        """A replacement is ready (registered: the broker routes to it now): it becomes
        the user's server and the one it replaces is stopped. False if it was stopped
        itself meanwhile (whoever stops it holds the user's lock: never wait on it)."""
        lock = self._user_lock(rec.user_id)
        while not lock.acquire(timeout=0.05):
            if rec.stopped.is_set():
                return False
        try:
            if rec.stopped.is_set() or self._nexts.get(rec.user_id) is not rec:
                return False
            del self._nexts[rec.user_id]
            old = self._servers.get(rec.user_id)
            self._servers[rec.user_id] = rec
            with rec.lock:
                rec.beside = False
            self._record(rec, "server")  # its record under the user's key, then the
            assert rec.proc is not None      # beside one goes
            self.records.remove(rec.key + NEXT, rec.proc.pid)
            if old is not None:
                self._stop(old)
            return True
        finally:
            lock.release()

    def _provision(self, rec: Server) -> None:
        try:
            with open(self.log_path(rec.user_id), "ab") as log:
                self._provision_logged(rec, log)
        except BuildCancelled:
            pass
        except BuildFailed as e:
            self._set(rec, "failed", f"building the environment failed: {e}", tail=True)
        except Exception as e:  # a bug or the disk: show it rather than hang in a phase
            self._set(rec, "failed", f"{type(e).__name__}: {e}", tail=True)

    def _provision_logged(self, rec: Server, log) -> None:
        def run(cmd: Sequence[str]) -> int:
            if not self._start(rec, cmd, self._child_env({}), log, role="build",
                               umask=BUILD_UMASK):
                raise BuildCancelled()
            assert rec.proc is not None
            code = rec.proc.wait()
            self.records.remove(rec.record_key, rec.proc.pid)
            if rec.stopped.is_set():
                raise BuildCancelled()
            return code

        spec = rec.spec
        rec.tenant = self.tenancy.tenant(rec.user_id, rec.key)
        if not self.envs.is_complete(spec, rec.interpreter):
            self._set(rec, "installing")
            with self.envs.locked(spec, rec.stopped.wait):
                self.envs.build(spec, rec.interpreter, run)
        self._set(rec, "starting")
        ready = rec.tenant.ready_file
        ready = rec.ready = ready.with_name(ready.name + (NEXT if rec.beside else ""))
        ready.unlink(missing_ok=True)
        venv = self.envs.path(spec)
        cmd = [
            part.replace("{python}", str(self.envs.python(spec))) for part in self.server_command
        ]
        shown = " ".join(cmd) + self.tenancy.describe(rec.tenant)
        cmd = self.tenancy.argv(rec.tenant, cmd, venv, rec.interpreter)
        cores = self._pin(rec)
        # The credential travels over a pipe: never in an environment /proc shows.
        cred_r, cred_w = os.pipe()
        env = self._child_env(
            {
                "ZEXEC_SERVER_BROKER_URL": self.broker_backend_url,
                "ZEXEC_SERVER_USER_ID": rec.user_id,
                "ZEXEC_SERVER_CREDENTIAL_FD": str(cred_r),
                **local_resources.server_env(
                    spec.resources, spec.resources.workers or self.server_workers, cores),
                "ZEXEC_SERVER_READY_FILE": str(ready),
                "ZEXEC_SERVER_IDLE_TIMEOUT": str(self.idle_timeout),
                "HOME": str(rec.tenant.workdir),
            },
            venv,
        )
        try:
            started = self._start(rec, cmd, env, log, role="server", cwd=rec.tenant.workdir,
                                  pass_fds=(cred_r,), shown=shown)
            os.close(cred_r)
            if started:
                with open(cred_w, "wb", closefd=False) as pipe:
                    pipe.write(server_credential(self._secret, rec.user_id).encode())
        except BrokenPipeError:
            pass  # it died at once; the log says why
        finally:
            os.close(cred_w)
        if not started:
            return
        proc = rec.proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout if self.start_timeout else None
        while proc.poll() is None and not ready.exists():
            if deadline is not None and time.monotonic() > deadline:
                procs.stop(proc, self.grace)
                self.records.remove(rec.record_key, proc.pid)
                self._set(rec, "failed", f"not ready after {self.start_timeout:g}s", tail=True)
                return
            if rec.stopped.wait(READY_POLL):
                return
        if proc.poll() is None:
            if rec.beside and not self._promote(rec):
                return
            self._set(rec, "ready")
        self._supervise(rec, proc)

    def _pin(self, rec: Server) -> tuple[int, ...]:
        """Pin this thread (which starts the server: a child inherits the affinity of
        the thread that forks it) to the cores ``rec`` asked for; () when it asked none."""
        if rec.spec.resources.cpus is None:
            return ()
        with self._guard:
            taken = [c for r in (*self._servers.values(), *self._nexts.values())
                     if r is not rec for c in r.cores]
            rec.cores = local_resources.pick_cores(rec.spec.resources.cpus, taken)
        os.sched_setaffinity(0, rec.cores)
        return rec.cores

    def _supervise(self, rec: Server, proc: subprocess.Popen[bytes] | procs.Adopted) -> None:
        """Wait for the server to exit, then say how it ended."""
        code = proc.wait()
        # A sandboxed server's leader (bubblewrap) may go first: let the server drain.
        procs.wait_group_gone(proc.pid, self.grace)
        procs.reap_group(proc)  # workers the server left behind
        self.records.remove(rec.record_key, proc.pid)
        if code == 0:
            self._set(rec, "terminated", "idle")
        elif code == procs.UNKNOWN_EXIT:
            self._set(rec, "terminated", procs.describe_exit(code), tail=True)
        else:
            self._set(rec, "failed", f"server {procs.describe_exit(code)}", tail=True)
