"""The Endpoint (EP) API: status, rexec discovery, user info and dataset search.

``create_app(settings, catalog, authenticator)`` builds it from collaborators;
``build_app_from_settings()`` composes it from the environment
(``python -m zexec.apps.ep_api`` serves that with uvicorn).
"""

from zexec.apps.ep_api.app import EP_API_VERSION, AdvancedSearch, create_app
from zexec.apps.ep_api.container import EPContainer, build_app_from_settings

__all__ = [
    "EP_API_VERSION",
    "AdvancedSearch",
    "EPContainer",
    "build_app_from_settings",
    "create_app",
]
