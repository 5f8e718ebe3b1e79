"""The Deploy API: spawn / status / terminate per-user servers, broker discovery, metrics.

``create_app(settings, orchestrator, authenticator)`` builds it from collaborators;
``build_app_from_settings()`` composes it from the environment
(``python -m zexec.apps.deploy_api`` serves that with uvicorn).

The names load on first use (PEP 562), so ``python -m zexec.apps.deploy_api`` reaches
its entry point, which explains a missing ``server`` extra, before FastAPI is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zexec.apps.deploy_api.app import create_app
    from zexec.apps.deploy_api.container import DeployContainer, build_app_from_settings

__all__ = ["DeployContainer", "build_app_from_settings", "create_app"]
_EXPORTS = {
    "create_app": "zexec.apps.deploy_api.app",
    "DeployContainer": "zexec.apps.deploy_api.container",
    "build_app_from_settings": "zexec.apps.deploy_api.container",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
