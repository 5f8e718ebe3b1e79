"""Process start-up shared by the apps' entry points: one log format, one way to serve."""

from __future__ import annotations

import logging
from typing import Any

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def configure_logging() -> None:
    """INFO-level logs to stderr in the format every zexec process uses."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def serve(app: Any, host: str, port: int) -> int:
    """Serve an ASGI app with uvicorn until stopped; the process exit code."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
    return 0
