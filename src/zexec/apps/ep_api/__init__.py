"""The Endpoint (EP) API: status, rexec discovery, user info and dataset search.

``create_app(settings, catalog, authenticator)`` builds it from collaborators;
``build_app_from_settings()`` composes it from the environment
(``python -m zexec.apps.ep_api`` serves that with uvicorn).

The names load on first use (PEP 562), so ``python -m zexec.apps.ep_api`` reaches its
entry point, which explains a missing ``server`` extra, before FastAPI is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zexec.apps.ep_api.app import EP_API_VERSION, AdvancedSearch, create_app
    from zexec.apps.ep_api.container import EPContainer, build_app_from_settings

__all__ = [
    "EP_API_VERSION",
    "AdvancedSearch",
    "EPContainer",
    "build_app_from_settings",
    "create_app",
]
_EXPORTS = {
    "EP_API_VERSION": "zexec.apps.ep_api.app",
    "AdvancedSearch": "zexec.apps.ep_api.app",
    "create_app": "zexec.apps.ep_api.app",
    "EPContainer": "zexec.apps.ep_api.container",
    "build_app_from_settings": "zexec.apps.ep_api.container",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
