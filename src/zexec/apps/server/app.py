"""Composition root of the per-user server: settings -> pool -> socket loop."""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from zexec.adapters.transport_zmq.server_loop import ServerLoop
from zexec.apps.runtime import configure_logging
from zexec.apps.server.adoption import bound
from zexec.apps.server.pool import WorkerPool, private_endpoint
from zexec.apps.server.stopped import StoppedWatch
from zexec.core.errors import ConfigurationError
from zexec.settings import ServerSettings


def read_credential_fd(fd: int) -> str:
    """The credential written to inherited descriptor ``fd`` (a pipe the orchestrator
    fills and closes), "" when ``fd`` is -1. The descriptor is closed after reading, so
    nothing started later (the workers, the user's code) inherits it."""
    if fd < 0:
        return ""
    try:
        with os.fdopen(fd, "rb") as f:
            return f.read(4096).decode().strip()
    except OSError as exc:
        raise ConfigurationError(f"ZEXEC_SERVER_CREDENTIAL_FD={fd}: cannot read it: {exc}") \
            from None


def build_server(settings: ServerSettings, workers: tuple[str, str] | None = None,
                 early_worker: tuple[Any, bytes] | None = None) -> ServerLoop:
    """Build a server from its settings (nothing starts until ``run``). ``workers`` is
    the workers' (directory, endpoint) (default: new ones) and ``early_worker`` a worker
    already started for it (see :mod:`zexec.apps.server.__main__`)."""
    credential = settings.credential.get_secret_value() or read_credential_fd(
        settings.credential_fd)
    if not settings.user_id or not credential:
        raise ConfigurationError(
            "the server needs ZEXEC_SERVER_USER_ID and ZEXEC_SERVER_CREDENTIAL (or "
            "ZEXEC_SERVER_CREDENTIAL_FD): the credential is derived from the broker "
            "secret by the deployer"
        )
    if settings.workers < 1:
        raise ConfigurationError("ZEXEC_SERVER_WORKERS must be at least 1")
    return ServerLoop(
        broker_url=settings.broker_url,
        user_id=settings.user_id,
        credential=credential,
        pool_factory=partial(
            WorkerPool, size=settings.workers,
            flush_interval=settings.output_flush_interval,
            flush_bytes=settings.output_flush_bytes,
            # Workers send results straight to the broker, except in fresh-process mode:
            # there a worker is killed right after its call, which could lose events
            # still queued on its own connection.
            broker=None if settings.fresh_process
            else (settings.broker_url, settings.user_id, credential),
        ),
        heartbeat_interval=settings.heartbeat_interval,
        ready_file=settings.ready_file,
        idle_timeout=settings.idle_timeout,
        fresh_process=settings.fresh_process,
        stopped_watch=StoppedWatch(settings.stopped_timeout),
        signal_exit_code=settings.signal_exit_code,
        name=settings.name,
        workers=workers or private_endpoint(),
        early_worker=early_worker,
    )


def main(settings: ServerSettings | None = None, workers: tuple[str, str] | None = None,
         early_worker: tuple[Any, bytes] | None = None) -> int:
    configure_logging()
    # A warm-pool pod waits here, environment built and first worker starting, for the
    # user who adopts it.
    settings = bound(settings or ServerSettings())
    server = build_server(settings, workers, early_worker)
    server.install_signal_handlers()
    return server.run()
