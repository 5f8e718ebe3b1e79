"""``python -m zexec.apps.ep_api``: serve the EP API configured by ``ZEXEC_*``."""

from __future__ import annotations


def main() -> int:
    from zexec.apps.ep_api.container import build_app_from_settings
    from zexec.apps.runtime import configure_logging, serve
    from zexec.settings import EPSettings

    configure_logging()
    settings = EPSettings()
    return serve(build_app_from_settings(settings), settings.host, settings.port)


if __name__ == "__main__":
    from zexec.apps.guard import guard

    raise SystemExit(guard("ep-api", main))
