"""The per-user server's socket loop: broker DEALER on one side, workers on the other.

It registers with the broker (the registration doubles as the heartbeat) and supervises
a pool of warm workers over an ipc ROUTER. With direct dispatch (a pooled server, the
default) the workers take calls from the broker on their own connections and send their
events to it; the broker decides cancels and timeouts and sends ``KILL`` for the worker
concerned; the server hears from a worker when a call has run 50 ms and when that call
ends (``T``/``D``, for draining and its heartbeat; quick calls cost it nothing), learns
when its user's last call came from the broker's ``RACK`` (its idle timeout), and
reports its workers' deaths (``WGONE``).
Otherwise (fresh-process mode, or a broker that sends it calls) it queues calls, hands
them to idle workers, forwards their events and enforces cancellation and deadlines
itself. Payloads are never deserialized here; that happens only in the workers.

The decisions are made by pure cores it feeds: :mod:`zexec.core.server.calls` (its calls,
their order and deadlines) and :mod:`zexec.core.server.lifetime` (idling, draining).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from zexec.adapters.transport_zmq.frames import NOBLOCK, recv_frames, send_frames
from zexec.core import protocol as p
from zexec.core.errors import ProtocolError
from zexec.core.ports import PoolWorker, WorkerPool
from zexec.core.protocol import channel as ch
from zexec.core.server.calls import Calls, Task
from zexec.core.server.lifetime import Lifetime

log = logging.getLogger("zexec.server")

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
TICK = 0.1
#: Seconds between registration attempts until the broker has acknowledged one.
FIRST_BEAT_RETRY = 0.05
#: Seconds a stopping direct server waits before it trusts that no call is running:
#: its workers announce a call only once it has run a while (outbound.ANNOUNCE_AFTER).
STOP_SETTLE = 0.2


class ServerLoop:
    def __init__(
        self, *, broker_url: str, user_id: str, credential: str,
        pool_factory: Callable[[str], WorkerPool],
        heartbeat_interval: float = 0.5, ready_file: str = "", idle_timeout: float = 0.0,
        fresh_process: bool = False, drain_timeout: float = 10.0,
        context: zmq.Context | None = None, workers: tuple[str, str],
        early_worker: tuple[Any, bytes] | None = None, stopped_watch: Any = None,
        signal_exit_code: int = 0, name: str = "",
    ) -> None:
        """``workers`` = (private directory, ipc endpoint in it) for the workers; the
        directory is removed on close. ``early_worker`` = (process, worker id) of a
        worker started for that endpoint before the settings were read (see
        :mod:`zexec.apps.server.__main__`): the pool adopts it. ``stopped_watch.tick(pool,
        now)`` runs each round (see :mod:`zexec.apps.server.stopped`). A stop asked by
        SIGTERM/SIGINT ends with ``signal_exit_code`` (``ZEXEC_SERVER_SIGNAL_EXIT_CODE``)."""
        if not user_id or not credential:
            raise ValueError("a server needs its user id and credential")
        self.user_id = user_id
        self.credential = credential
        self.heartbeat_interval = heartbeat_interval
        self.name = name
        self.ready_file = ready_file
        self.fresh_process = fresh_process
        # Our own context, terminated in close(): only that waits for the broker socket's
        # linger, so BYE and the last replies leave before the process exits.
        self._own_context = context is None
        self.ctx = context or zmq.Context()
        self.broker = self.ctx.socket(zmq.DEALER)
        self.broker.setsockopt(zmq.LINGER, 2000)
        # Nothing is queued for a broker that is not connected: a heartbeat or reply
        # from minutes ago is worthless to a restarted broker, and a full queue would
        # block this loop (and its signal handling) forever.
        self.broker.setsockopt(zmq.IMMEDIATE, 1)
        self.broker.setsockopt(zmq.RECONNECT_IVL, 100)
        self.broker.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self.broker.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        self.broker.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        self.broker.connect(broker_url)
        self._dir, endpoint = workers
        self.workers_sock = self.ctx.socket(zmq.ROUTER)
        self.workers_sock.setsockopt(zmq.LINGER, 0)
        self.workers_sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.workers_sock.bind(endpoint)
        self.pool: WorkerPool = pool_factory(endpoint)
        if early_worker:
            self.pool.adopt(*early_worker)
        self.calls = Calls()
        self.registered = False
        self.life = Lifetime(idle_timeout=idle_timeout, drain_timeout=drain_timeout,
                             now=time.monotonic())
        self.exit_code = 0
        self.started = time.time()
        self.stopped_watch = stopped_watch
        self.signal_exit_code = signal_exit_code

    # ------------------------------------------------------------------ broker side

    def _heartbeat(self) -> None:
        info = {"python": PYTHON, "workers": self.pool.size, "pid": os.getpid(),
                "running": self.calls.running, "queued": self.calls.waiting,
                "direct": self.pool.direct, "stopping": self.stopping,
                "worker_prefix": self.pool.worker_prefix,
                "started": self.started,  # the newest of a user's servers wins
                "name": self.name}
        self._to_broker(p.register(self.user_id, self.credential, info))

    def _to_broker(self, frames: list[Any]) -> None:
        try:
            send_frames(self.broker, frames, NOBLOCK)
        except zmq.Again:
            # No broker connection right now: the client's liveness check reports the
            # call; the next heartbeat re-registers once the broker is back.
            log.debug("broker unreachable; message dropped")

    def _on_broker(self, frames: list[Any]) -> None:
        ack = p.parse_register_ack(frames)
        if ack is not None:
            if not ack.get("ok"):
                log.error("the broker refused this server: %s", ack.get("error"))
                self.exit_code = 3
                self.life.stop(drain=False)
            else:
                # Direct dispatch: quick calls never reach this server, the broker
                # says when the last one came (for the idle timeout).
                ago = ack.get("last_call_ago")
                if isinstance(ago, int | float) and not isinstance(ago, bool):
                    self.life.active(time.monotonic() - ago)
            if ack.get("ok") and not self.registered:
                self.registered = True
                log.info("registered with the broker as the server of user %s", self.user_id)
                if self.ready_file:
                    Path(self.ready_file).touch()
            return
        worker_id = p.parse_kill(frames[1:])
        if worker_id is not None:
            w = self.pool.by_broker_id.get(worker_id)
            if w is not None:  # the broker ended its call (cancel, timeout): stop it
                if w.task is not None:
                    self._forget(w.task)
                    w.task = None
                self.pool.kill(w)
            return
        try:
            msg = p.parse_server_bound(frames[1:])
        except ProtocolError as exc:
            log.warning("ignored a malformed broker message: %s", exc)
            return
        if msg.verb in (p.CALL, p.LEGACY_CALL):
            self._on_call(msg)
        elif msg.verb in (p.CANCEL, p.LEGACY_CANCEL_VERB):
            reason = p.frame_bytes(msg.rest[0]).decode(errors="replace") if msg.rest else ""
            self._cancel((msg.client_id, msg.call_key), reason)

    def _on_call(self, msg: p.ServerBound) -> None:
        legacy = msg.verb == p.LEGACY_CALL
        key = (msg.client_id, msg.call_key)
        self.life.active(time.monotonic())
        task = self.calls.new(msg.client_id, msg.call_key, legacy)
        if msg.user_id != self.user_id:
            self._fail(task, "FORBIDDEN", f"this server serves another user than {msg.user_id}")
            return
        if self.stopping:
            self._fail(task, "SHUTTING_DOWN", "the server is shutting down")
            return
        if key in self.calls:
            return  # a duplicate: the call is already here
        if legacy:
            if len(msg.rest) != 2:
                self._fail(task, "BAD_REQUEST", "legacy call needs [fn, args]")
                return
            task.frames = ch.task(task.key, True, b"", msg.client_id, msg.rest)
        else:
            try:
                header = p.load_header(msg.rest[0])
            except (ProtocolError, IndexError) as exc:
                self._fail(task, "BAD_REQUEST", f"bad call header: {exc}")
                return
            task.timeout = p.call_timeout(header)
            task.frames = ch.task(task.key, False, msg.call_key, msg.client_id, msg.rest)
        self.calls.enqueue(task, time.monotonic())
        self._dispatch()

    def _send_client(self, task: Task, final: bool, body: list[Any]) -> None:
        task.sent += 1
        self._to_broker(p.reply(task.client_id, task.call_key, final, body))

    def _fail(self, task: Task, code: str, message: str, type_name: str = "") -> None:
        """End ``task`` with an error event generated here (not by a worker)."""
        seq = task.own_seq()
        self._send_client(task, True, p.final_error(task.call_key, task.legacy, code, message,
                                                    seq, type_name))
        self._forget(task)

    def _forget(self, task: Task) -> None:
        self.calls.forget(task)
        self.life.active(time.monotonic())

    def _cancel(self, key: tuple[bytes, bytes], reason: str) -> None:
        task = self.calls.find(key)
        if task is None:
            return
        if task.worker is not None:
            self._stop_worker(task)
        else:
            self.calls.unqueue(task)
        seq = task.own_seq()
        self._send_client(task, True, p.final_cancelled(task.call_key, task.legacy, reason, seq))
        self._forget(task)

    # ------------------------------------------------------------------ worker side

    def _dispatch(self) -> None:
        while self.calls.waiting:
            w = self.pool.idle()
            if w is None:
                return
            task = self.calls.next_waiting()
            task.worker, w.task = w, task
            try:
                send_frames(self.workers_sock, [w.wid, *task.frames])
            except zmq.ZMQError:  # it died just now; its pidfd will tell
                task.worker, w.task = None, None
                self.calls.put_back(task)
                w.ready = False
                return
            task.frames = []  # the worker has the arguments: do not hold them twice
            task.direct = self.pool.direct

    def _on_worker(self, frames: list[Any]) -> None:
        wid = p.frame_bytes(frames[0])
        w = self.pool.workers.get(wid)
        if w is None:
            return
        try:
            said = ch.parse_from_worker(frames[1:])
        except ProtocolError:
            return
        if isinstance(said, ch.Hello):  # a new worker asks for its configuration
            try:
                send_frames(self.workers_sock, [wid, *ch.config(self.pool.config_for(w))])
            except zmq.ZMQError:
                pass  # it died just now; its pidfd will tell
        elif isinstance(said, ch.Ready):
            w.ready = True
        elif isinstance(said, ch.Started):
            self._on_started(w, said)
        elif isinstance(said, ch.Done) and said.task_key == ch.NO_TASK:
            if w.task is not None and w.task.from_broker:
                self._forget(w.task)
                w.task.worker = None
                w.task = None
        else:
            self._on_task_output(w, said)

    def _on_task_output(self, w: PoolWorker, said: ch.Output | ch.Done) -> None:
        task = self.calls.get(said.task_key)
        if task is None or task.worker is not w:
            return  # a late message of a cancelled call
        final = True
        if isinstance(said, ch.Output):  # (Done: the worker sent the events to the broker)
            final = said.final
            self._send_client(task, final, said.body)
        if final:
            w.task = None
            task.worker = None
            self._forget(task)
            if self.fresh_process:
                self.pool.kill(w)

    def _on_started(self, w: PoolWorker, said: ch.Started) -> None:
        """A call the broker gave worker ``w`` has run a while. Kept for draining and the
        heartbeat: the broker ends these calls itself (cancel, timeout, worker death)."""
        task = self.calls.new(said.client_id, said.call_key, said.legacy, worker=w,
                              direct=True, from_broker=True)
        self.calls.track(task)
        w.task = task
        self.life.active(time.monotonic())

    def _stop_worker(self, task: Task) -> None:
        w = task.worker
        w.task = None
        task.worker = None
        self.pool.kill(w)

    def _on_worker_exit(self, fd: int) -> None:
        w = self.pool.reap(fd)
        code = w.proc.returncode
        # Its call's unsent output goes out before the error that ends the call.
        death = self.pool.death(w)
        left = death.leftover
        message = w.reason or death.message  # the server's own reason (it was stopped) first
        if self.pool.direct:  # the broker fails its call, if it gave it one
            if left is not None and not w.retired:  # (killed on purpose: ended already)
                bodies = death.output(left.call_id, left.legacy, left.seq + 1)
                for body in bodies:
                    self._to_broker(p.reply(left.client_id, left.call_id, False, body))
                self._to_broker(p.reply(left.client_id, left.call_id, True, p.final_error(
                    left.call_id, left.legacy, "WORKER_DIED", message,
                    left.seq + 1 + len(bodies))))
            self._to_broker(p.worker_gone(w.broker_id, code, w.reason))
        if w.task is not None and w.task.from_broker:
            self._forget(w.task)
        elif w.task is not None:
            for body in death.output(w.task.call_key, w.task.legacy, w.task.own_seq()):
                self._send_client(w.task, False, body)
            self._fail(w.task, "WORKER_DIED", message)
        if not self.stopping:
            self._spawn_into(self._poller)

    def _spawn_into(self, poller: zmq.Poller) -> None:
        while len(self.pool.workers) < self.pool.size:
            w = self.pool.spawn()
            poller.register(w.pidfd, zmq.POLLIN)

    def _check_deadlines(self, now: float) -> None:
        for task in self.calls.expired(now):
            if task.worker is not None:
                self._stop_worker(task)
            self._fail(task, "DEADLINE_EXCEEDED",
                       f"the call exceeded its timeout of {task.timeout:g}s and was stopped",
                       "TimeoutError")

    # ------------------------------------------------------------------ loop

    @property
    def stopping(self) -> bool:
        return self.life.stopping

    def request_stop(self) -> None:
        self.life.stop()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stop_on_signal())

    def _stop_on_signal(self) -> None:
        if not self.exit_code:  # a refused registration's 3 says more
            self.exit_code = self.signal_exit_code
        self.request_stop()

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        self._poller = poller = zmq.Poller()
        poller.register(self.broker, zmq.POLLIN)
        poller.register(self.workers_sock, zmq.POLLIN)
        for w in self.pool.workers.values():  # adopted before the loop existed
            poller.register(w.pidfd, zmq.POLLIN)
        self._spawn_into(poller)
        self._heartbeat()
        next_beat = time.monotonic() + FIRST_BEAT_RETRY
        try:
            while True:
                wait = max(0.0, min(TICK, next_beat - time.monotonic()))
                for sock_or_fd, _ in poller.poll(wait * 1000):
                    if sock_or_fd is self.broker:
                        for _ in range(256):
                            try:
                                frames = recv_frames(self.broker, NOBLOCK, 7)
                            except zmq.Again:
                                break
                            try:
                                self._on_broker(frames)
                            except Exception:  # a bad message must not kill the server
                                log.exception("failed to handle a broker message")
                            del frames  # the worker has the payload now; do not keep it
                    elif sock_or_fd is self.workers_sock:
                        for _ in range(256):
                            try:
                                frames = recv_frames(self.workers_sock, NOBLOCK, 7)
                            except zmq.Again:
                                break
                            self._on_worker(frames)
                            del frames
                    else:
                        poller.unregister(sock_or_fd)
                        self._on_worker_exit(sock_or_fd)
                self._dispatch()
                now = time.monotonic()
                self._check_deadlines(now)
                if self.stopped_watch is not None:
                    self.stopped_watch.tick(self.pool, now)
                if now >= next_beat:
                    self._heartbeat()
                    # Until the broker has answered, retry soon: a REG sent before the
                    # TCP connection was up was dropped (IMMEDIATE), and every wait here
                    # delays the user's "ready".
                    next_beat = now + (self.heartbeat_interval if self.registered
                                       else FIRST_BEAT_RETRY)
                if not self.stopping and self.life.idle(now, busy=bool(self.calls)):
                    log.info("idle for %.0fs: exiting", self.life.idle_timeout)
                    self.life.stop()
                if self.stopping:
                    # A call the broker gave a worker just before is either over or
                    # announced (T) after STOP_SETTLE.
                    if self.life.begin(now, STOP_SETTLE if self.pool.direct else 0.0):
                        self._heartbeat()  # "stopping": the broker sends no more calls
                    if self.life.may_exit(now, busy=bool(self.calls)):
                        break
        finally:
            for task in self.calls.all():
                self._fail(task, "SHUTTING_DOWN", "the server shut down before the call ended")
            self._to_broker(p.bye())
            self.close()
        return self.exit_code

    def close(self) -> None:
        self.pool.close()
        self.workers_sock.close(0)
        self.broker.close()  # LINGER lets BYE and the last replies go out
        shutil.rmtree(self._dir, ignore_errors=True)
        if self._own_context:
            self.ctx.term()
