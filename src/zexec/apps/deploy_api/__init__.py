"""The Deploy API: spawn / status / terminate per-user servers, broker discovery, metrics.

``create_app(settings, orchestrator, authenticator)`` builds it from collaborators;
``build_app_from_settings()`` composes it from the environment
(``python -m zexec.apps.deploy_api`` serves that with uvicorn).
"""

from zexec.apps.deploy_api.app import create_app
from zexec.apps.deploy_api.container import DeployContainer, build_app_from_settings

__all__ = ["DeployContainer", "build_app_from_settings", "create_app"]
