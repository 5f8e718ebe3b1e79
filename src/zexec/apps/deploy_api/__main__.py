"""``python -m zexec.apps.deploy_api``: serve the Deploy API configured by ``ZEXEC_*``."""

from __future__ import annotations


def main() -> int:
    from zexec.apps.deploy_api.container import build_app_from_settings
    from zexec.apps.runtime import configure_logging, serve
    from zexec.settings import DeploySettings

    configure_logging()
    settings = DeploySettings()
    return serve(build_app_from_settings(settings), settings.host, settings.port)


if __name__ == "__main__":
    from zexec.apps.guard import guard

    raise SystemExit(guard("deploy-api", main))
