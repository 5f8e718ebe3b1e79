#!/usr/bin/env python3
"""Container HEALTHCHECK of the zexec apps image (standard library only).

Which app runs is read from PID 1's command line (``zexec broker`` / ``deploy-api`` /
``ep-api``); ``ZEXEC_HEALTHCHECK`` or the first argument overrides it with a target:
``tcp://host:port``, an ``http(s)://`` URL, or ``zexec-control://host:port`` (the broker's
control port must answer a STATUS command authenticated with ``ZEXEC_BROKER_ADMIN_TOKEN``:
the event loop itself is alive, not only its listening socket; this one imports zexec). Ports follow the apps' settings (ZEXEC_BROKER_FRONTEND_PORT,
ZEXEC_DEPLOY_PORT + ZEXEC_DEPLOY_PREFIX, ZEXEC_EP_PORT). Exit 0 = healthy, 1 = not.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from urllib.parse import urlsplit


def target_for(argv: list[str], env: dict[str, str]) -> str | None:
    """The probe target of the app started with ``argv`` (None: unknown app)."""
    words = {os.path.basename(a) for a in argv}
    if "broker" in words or "zexec.apps.broker" in words:
        return f"tcp://127.0.0.1:{env.get('ZEXEC_BROKER_FRONTEND_PORT', '5559')}"
    if "deploy-api" in words or "zexec.apps.deploy_api" in words:
        prefix = env.get("ZEXEC_DEPLOY_PREFIX", "/rexec").rstrip("/")
        return f"http://127.0.0.1:{env.get('ZEXEC_DEPLOY_PORT', '8000')}{prefix}/healthz"
    if "ep-api" in words or "zexec.apps.ep_api" in words:
        return f"http://127.0.0.1:{env.get('ZEXEC_EP_PORT', '8001')}/health"
    return None


def probe(target: str, timeout: float = 3.0) -> bool:
    url = urlsplit(target)
    try:
        if url.scheme == "zexec-control":
            from zexec.adapters.transport_zmq.control_client import broker_control

            admin = os.environ.get("ZEXEC_BROKER_ADMIN_TOKEN", "")
            reply = broker_control(url.hostname, url.port, admin, timeout=timeout)
            return bool(reply and reply.get("ok"))
        if url.scheme == "tcp":
            with socket.create_connection((url.hostname, url.port), timeout=timeout):
                return True
        with urllib.request.urlopen(target, timeout=timeout) as resp:  # noqa: S310
            return 200 <= resp.status < 300
    except (OSError, ValueError):
        return False


def pid1_argv() -> list[str]:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def main() -> int:
    target = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get(
        "ZEXEC_HEALTHCHECK") or target_for(pid1_argv(), dict(os.environ))
    if not target:
        print(
            "zexec-healthcheck: cannot tell which app runs; set ZEXEC_HEALTHCHECK", file=sys.stderr
        )
        return 1
    ok = probe(target)
    if not ok:
        print(f"zexec-healthcheck: {target} not healthy", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
