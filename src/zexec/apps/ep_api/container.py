"""Composition root of the EP API: settings -> catalog + authenticator (+ login) -> app.

:class:`EPContainer` selects the catalog by ``EPSettings.catalog`` (``sqlite``: the
embedded full-text catalog seeded from ``seed_file`` or the shipped samples; ``ckan``: a
CKAN site). :func:`build_app_from_settings` is what ``python -m zexec.apps.ep_api`` and
``zexec up`` call; tests override providers instead of patching.
"""

from __future__ import annotations

from typing import Any

import httpx
from dependency_injector import containers, providers
from fastapi import FastAPI

from zexec.apps.auth_wiring import build_authenticator
from zexec.apps.ep_api.app import Login, create_app
from zexec.core.errors import AuthUnavailable, ConfigurationError, Unauthenticated
from zexec.core.ports import Authenticator, Catalog
from zexec.settings import AuthSettings, EPSettings, HttpSettings


def sqlite_catalog(settings: EPSettings) -> Catalog:
    from zexec.adapters.catalog_sqlite import SAMPLE_DATASETS, SqliteCatalog, load_seed_file

    return SqliteCatalog(
        settings.catalog_db, seed=load_seed_file(settings.seed_file or SAMPLE_DATASETS)
    )


def ckan_catalog(settings: EPSettings) -> Catalog:
    from zexec.adapters.catalog_ckan import CkanCatalog

    if not settings.ckan_url:
        raise ConfigurationError("ZEXEC_EP_CATALOG=ckan needs ZEXEC_EP_CKAN_URL")
    return CkanCatalog(settings.ckan_url, api_key=settings.ckan_api_key.get_secret_value())


def http_login(url: str, timeout: float = 10.0) -> Login:
    """``login(username, password)`` POSTing JSON to ``url``; the answer must carry
    ``access_token``. 400/401/403 -> Unauthenticated; anything else -> AuthUnavailable."""

    def login(username: str, password: str) -> dict[str, Any]:
        try:
            resp = httpx.post(
                url, json={"username": username, "password": password}, timeout=timeout
            )
        except httpx.HTTPError as exc:
            raise AuthUnavailable(f"login service unreachable: {exc.__class__.__name__}") from None
        if resp.status_code in (400, 401, 403):
            raise Unauthenticated("invalid username or password")
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code != 200 or not isinstance(data, dict) or not data.get("access_token"):
            raise AuthUnavailable(f"login service answered HTTP {resp.status_code} without a token")
        return {"token_type": "bearer", **data}

    return login


def _login(settings: EPSettings) -> Login | None:
    return http_login(settings.login_url) if settings.login_url else None


def _closers(catalog: Any) -> list[Any]:
    close = getattr(catalog, "close", None)
    return [close] if callable(close) else []


class EPContainer(containers.DeclarativeContainer):
    """``settings``/``auth_settings`` are given; ``app`` is the product."""

    settings = providers.Dependency(instance_of=EPSettings)
    auth_settings = providers.Dependency(instance_of=AuthSettings)
    http_settings = providers.Singleton(HttpSettings)
    catalog_name = providers.Callable(lambda s: s.catalog, settings)

    catalog = providers.Selector(
        catalog_name,
        sqlite=providers.Singleton(sqlite_catalog, settings),
        ckan=providers.Singleton(ckan_catalog, settings),
    )
    authenticator = providers.Singleton(build_authenticator, auth_settings)
    login = providers.Singleton(_login, settings)
    app = providers.Singleton(
        create_app,
        settings,
        catalog,
        authenticator,
        login=login,
        closers=providers.Callable(_closers, catalog),
        max_body_size=providers.Callable(lambda s: s.max_body_bytes, http_settings),
    )


def build_app_from_settings(
    settings: EPSettings | None = None,
    auth_settings: AuthSettings | None = None,
    *,
    catalog: Catalog | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The EP API the settings (default: the environment) describe; ``catalog`` /
    ``authenticator`` override what the settings would select."""
    container = EPContainer(
        settings=settings if settings is not None else EPSettings(),
        auth_settings=auth_settings if auth_settings is not None else AuthSettings(),
    )
    if catalog is not None:
        container.catalog.override(providers.Object(catalog))
    if authenticator is not None:
        container.authenticator.override(providers.Object(authenticator))
    return container.app()
