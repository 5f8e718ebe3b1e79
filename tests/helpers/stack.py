"""A real execution stack for integration tests: broker and servers as subprocesses.

Processes, not threads, so tests can kill -9 a server, restart the broker on the same
ports, and send SIGINT/SIGTERM like a user or an orchestrator would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from zexec.adapters.hugepages import with_hugepages
from zexec.adapters.transport_zmtp.tls import file_pin, make_self_signed
from zexec.apps.devidp.tokens import generate_tokens, user_id_for
from zexec.core.protocol import server_credential

SECRET = "test-broker-secret"
ADMIN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until truthy; raise (never hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def _env(**extra: str) -> dict[str, str]:
    # As zexec's own launchers do (zexec up, the local orchestrator).
    env = {k: v for k, v in with_hugepages(os.environ).items() if not k.startswith("ZEXEC_")}
    env.update(extra)
    return env


@dataclass
class Stack:
    """Broker + servers on loopback. ``tokens[user]`` are valid bearer tokens."""

    workdir: Path
    ports: tuple[int, int, int] = field(default_factory=lambda: (free_port(), free_port(),
                                                                 free_port()))
    tokens: dict[str, str] = field(default_factory=dict)
    broker: subprocess.Popen | None = None
    servers: dict[str, subprocess.Popen] = field(default_factory=dict)
    extra_broker_env: dict[str, str] = field(default_factory=dict)
    #: Run in the broker process before it starts (e.g. lowering its RLIMIT_NOFILE).
    broker_preexec: Any = None
    #: The broker's encrypted (TLS) client port is ``secure_frontend``; ``tls_pin`` the
    #: SHA-256 of its self-signed certificate (made in ``workdir``).
    secure_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.tokens_file = self.workdir / "tokens.json"
        self.tokens = generate_tokens(self.tokens_file, ("alice", "bob", "carol"))
        self.tls_cert = self.workdir / "broker-tls.crt"
        self.tls_key = self.workdir / "broker-tls.key"
        if not self.tls_cert.exists():
            make_self_signed(self.tls_cert, self.tls_key, ["127.0.0.1", "localhost"])
        self.tls_pin = file_pin(self.tls_cert)

    @property
    def frontend(self) -> str:
        return f"tcp://127.0.0.1:{self.ports[0]}"

    @property
    def secure_frontend(self) -> str:
        return f"tls://127.0.0.1:{self.secure_port}"

    @property
    def backend(self) -> str:
        return f"tcp://127.0.0.1:{self.ports[1]}"

    @property
    def control(self) -> str:
        return f"tcp://127.0.0.1:{self.ports[2]}"

    def start_broker(self) -> subprocess.Popen:
        settings = dict(
            ZEXEC_BROKER_HOST="127.0.0.1",
            ZEXEC_BROKER_FRONTEND_PORT=str(self.ports[0]),
            ZEXEC_BROKER_BACKEND_PORT=str(self.ports[1]),
            ZEXEC_BROKER_CONTROL_PORT=str(self.ports[2]),
            ZEXEC_BROKER_SERVER_SECRET=SECRET,
            ZEXEC_BROKER_ADMIN_TOKEN=ADMIN,
            ZEXEC_AUTH_MODE="static",
            ZEXEC_AUTH_STATIC_FILE=str(self.tokens_file),
            ZEXEC_BROKER_TLS_CERT_FILE=str(self.tls_cert),
            ZEXEC_BROKER_TLS_KEY_FILE=str(self.tls_key),
            ZEXEC_BROKER_SECURE_PORT=str(self.secure_port),
        )
        env = _env(**{**settings, **self.extra_broker_env})
        log = open(self.workdir / "broker.log", "ab")
        self.broker = subprocess.Popen([sys.executable, "-m", "zexec.apps.broker"], env=env,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       preexec_fn=self.broker_preexec)
        wait_for(self._broker_listening, what="broker to listen")
        return self.broker

    def _broker_listening(self) -> bool:
        if self.broker is not None and self.broker.poll() is not None:
            raise RuntimeError(f"broker exited: {self.log('broker')}")
        try:
            with socket.create_connection(("127.0.0.1", self.ports[0]), timeout=0.2):
                return True
        except OSError:
            return False

    def start_server(self, user: str = "alice", workers: int = 2, user_id: str = "",
                     credential: str = "", launcher: tuple[str, ...] = (),
                     **env: str) -> subprocess.Popen:
        """Start ``user``'s server (its id is the dev IdP's id for that name unless
        ``user_id`` is given) and wait until the broker accepted it. ``launcher`` is
        put before the command (a wrapper that ends with ``exec "$@"``)."""
        ready = self.workdir / f"{user}.ready"
        ready.unlink(missing_ok=True)
        uid = user_id or user_id_for(user)
        penv = _env(
            ZEXEC_SERVER_BROKER_URL=self.backend,
            ZEXEC_SERVER_USER_ID=uid,
            ZEXEC_SERVER_CREDENTIAL=credential or server_credential(SECRET.encode(), uid),
            ZEXEC_SERVER_WORKERS=str(workers),
            ZEXEC_SERVER_READY_FILE=str(ready),
            **env,
        )
        log = open(self.workdir / f"server-{user}.log", "ab")
        proc = subprocess.Popen([*launcher, sys.executable, "-m", "zexec.apps.server"], env=penv,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.servers[user] = proc

        def is_ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log('server-' + user)}")
            return ready.exists()

        wait_for(is_ready, what=f"server of {user} to register")
        return proc

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill_server(self, user: str, sig: int = signal.SIGKILL, timeout: float = 10) -> None:
        proc = self.servers.pop(user)
        os.killpg(proc.pid, sig)  # the whole group: server and its workers
        proc.wait(timeout)

    def stop_broker(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.broker is not None
        self.broker.send_signal(sig)
        code = self.broker.wait(timeout)
        self.broker = None
        return code

    def control_command(self, command: bytes, token: str = ADMIN) -> dict:
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, 5000)
        s.connect(self.control)
        try:
            frames = [b"", token.encode(), command] if token else [b"", command]
            s.send_multipart(frames)
            reply = s.recv_multipart()
            return json.loads(reply[-1])
        finally:
            s.close()

    def close(self) -> None:
        for user in list(self.servers):
            proc = self.servers[user]
            if proc.poll() is None:
                try:
                    # A server drains its calls on SIGTERM (a module's abandoned calls
                    # included): on a loaded machine that can take longer than 10 s.
                    self.kill_server(user, signal.SIGTERM, timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            else:
                self.servers.pop(user)
        if self.broker is not None and self.broker.poll() is None:
            self.broker.kill()
            self.broker.wait(10)
