"""Process start-up shared by the apps' entry points: one log format, one way to serve.

:func:`serve` runs one ASGI app (``zexec deploy-api``, ``ep-api``, ``devidp``);
:func:`serve_all` runs several in one process and one event loop, each on its own
address (``zexec web``, which ``zexec up`` starts: one Python process pays for FastAPI's
import once instead of three times).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import resource
import signal
from collections.abc import Sequence
from typing import Any

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
#: The format of a process serving several apps: ``[app]`` names the one that logged
#: (``[-]``: the process itself).
TAGGED_LOG_FORMAT = "%(asctime)s [%(app)s] %(name)s %(levelname)s %(message)s"

#: The app whose work the current task (or worker thread) is doing, for the log tag.
#: Set once per app's serving task: everything that app's server runs (its requests,
#: lifespan, threadpool calls) inherits it.
current_app: contextvars.ContextVar[str] = contextvars.ContextVar("zexec_app", default="-")


class _AppTag(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.app = current_app.get()
        return True


def configure_logging(tagged: bool = False) -> None:
    """INFO-level logs in the format every zexec process uses, to stderr or, with
    ``ZEXEC_LOG_FILE``, to a file the process rotates itself (stdout and stderr follow
    it); repeated lines limited, access-log lines without query strings (see
    :mod:`zexec.apps.logfiles`). ``tagged`` adds the ``[app]`` of :func:`serve_all`'s
    apps to every line."""
    from zexec.apps.logfiles import ProcessLogFile, RepeatLimit, StripQuery
    from zexec.settings import LogSettings

    settings = LogSettings()
    root = logging.getLogger()
    before = set(root.handlers)
    handlers = None
    if settings.file:
        handlers = [ProcessLogFile(settings.file, settings.max_bytes, settings.backups)]
    logging.basicConfig(
        level=logging.INFO, format=TAGGED_LOG_FORMAT if tagged else LOG_FORMAT, handlers=handlers
    )
    limit = RepeatLimit(settings.repeat_burst, settings.repeat_interval)
    for handler in set(root.handlers) - before:  # the handler basicConfig added, if any
        handler.addFilter(limit)
        if tagged:
            handler.addFilter(_AppTag())
    logging.getLogger("uvicorn.access").addFilter(StripQuery())


def raise_open_files_limit(log: logging.Logger) -> int:
    """Raise this process's soft limit on open files to its hard limit (a broker holds a
    descriptor per connection; 1024, a common default, is a few hundred clients) and say
    so; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            target = int(open("/proc/sys/fs/nr_open").read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open files limit raised from %d to %d (the hard limit)", soft, target)
            return target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d: %s", soft, exc)
            return soft
    log.info("open files limit: %d (the hard limit)", soft)
    return soft


def serve(app: Any, host: str, port: int) -> int:
    """Serve an ASGI app with uvicorn until stopped; the process exit code."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", log_config=None)
    return 0


def serve_all(apps: Sequence[tuple[str, Any, str, int]]) -> int:
    """Serve ``(name, app, host, port)`` items, one uvicorn server each, in one event loop
    until SIGTERM or SIGINT; the process exit code (0, or the failure status of an app
    that could not start).

    Every app goes through its lifespan as under :func:`serve` (start-up before its port
    opens, shutdown after its connections are done); on a signal they all stop together,
    and the call returns once every app's shutdown has run. A second SIGINT skips what is
    left of the graceful shutdown. If one app stops on its own (it failed to start: port
    in use, a lifespan error), the others stop too: the process never serves half of its
    apps. Logs go through the root logger (:func:`configure_logging` with
    ``tagged=True`` names each line's app).
    """
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        # uvicorn installs per-server signal handlers (the last server would take the
        # signals from the others); the process-wide handler of _serve_all stops them all.
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    if not apps:
        raise ValueError("serve_all needs at least one app")
    servers = [
        (name, Server(uvicorn.Config(app, host=host, port=port, log_level="info", log_config=None)))
        for name, app, host, port in apps
    ]
    get_factory = getattr(servers[0][1].config, "get_loop_factory", None)  # uvicorn >= 0.36
    with asyncio.Runner(loop_factory=get_factory() if get_factory else None) as runner:
        return runner.run(_serve_all(servers))


async def _serve_all(servers: Sequence[tuple[str, Any]]) -> int:
    import asyncio

    codes: list[int] = []
    signalled: list[int] = []

    def stop() -> None:
        for _, s in servers:
            s.should_exit = True

    def on_signal(sig: int) -> None:
        if sig == signal.SIGINT and signal.SIGINT in signalled:
            for _, s in servers:  # the second Ctrl-C: no more waiting
                s.force_exit = True
        signalled.append(sig)
        stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    async def run(name: str, server: Any) -> None:
        current_app.set(name)  # this task's copy of the context: its requests inherit it
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn's start-up failure (sys.exit(1))
            codes.append(exc.code if isinstance(exc.code, int) else 1)
        finally:
            stop()  # one app gone: all go

    try:
        done = await asyncio.gather(*(run(name, s) for name, s in servers), return_exceptions=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    errors = [e for e in done if isinstance(e, BaseException)]
    if errors:
        raise errors[0]
    return next((c for c in codes if c), 0)
