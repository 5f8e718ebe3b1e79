"""``python -m zexec.apps.ep_api``: serve the EP API configured by ``ZEXEC_*``."""

from __future__ import annotations

import logging

import uvicorn

from zexec.apps.ep_api.container import build_app_from_settings
from zexec.settings import EPSettings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = EPSettings()
    app = build_app_from_settings(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
