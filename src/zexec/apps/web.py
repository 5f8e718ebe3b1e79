"""``zexec web``: the development identity provider, the Deploy API and the EP API in one
process, each on its own port.

Each app is built by its own composition root, exactly as its single-app command builds
it (:func:`zexec.apps.devidp.app.create_app`, the Deploy API's and the EP API's
``build_app_from_settings``), and reads the same settings (``ZEXEC_DEPLOY_*``,
``ZEXEC_EP_*``, ``ZEXEC_AUTH_*``, the broker's ``ZEXEC_BROKER_*``); only the IdP's
address comes from options. :func:`zexec.apps.runtime.serve_all` serves them in one event
loop: one interpreter imports FastAPI once instead of three times, which is most of
``zexec up``'s start-up on a small machine. SIGTERM stops all three, each through its
lifespan shutdown (the Deploy API's stops the servers it started). Log lines are tagged
``[devidp]``, ``[deploy-api]``, ``[ep-api]`` (``[-]``: the process itself).

The Helm chart keeps running one app per process (``zexec deploy-api`` ...), each scaled
on its own.
"""

from __future__ import annotations

import os
from typing import Any

from zexec.apps.runtime import configure_logging, serve_all

#: The apps, in the order they are built and started.
APPS = ("devidp", "deploy-api", "ep-api")


def build_apps(
    tokens_file: str | os.PathLike[str], idp_host: str, idp_port: int
) -> list[tuple[str, Any, str, int]]:
    """``(name, app, host, port)`` of the three apps, configured by the environment."""
    from zexec.apps.deploy_api.container import build_app_from_settings as deploy_api
    from zexec.apps.devidp.app import create_app as devidp
    from zexec.apps.ep_api.container import build_app_from_settings as ep_api
    from zexec.settings import DeploySettings, EPSettings, HttpSettings

    deploy, ep = DeploySettings(), EPSettings()
    return [
        ("devidp", devidp(tokens_file, HttpSettings().max_body_bytes), idp_host, idp_port),
        ("deploy-api", deploy_api(deploy), deploy.host, deploy.port),
        ("ep-api", ep_api(ep), ep.host, ep.port),
    ]


def main(
    tokens_file: str | os.PathLike[str], idp_host: str = "127.0.0.1", idp_port: int = 8090
) -> int:
    """Serve the three apps until SIGTERM/SIGINT; the process exit code."""
    configure_logging(tagged=True)
    return serve_all(build_apps(tokens_file, idp_host, idp_port))
