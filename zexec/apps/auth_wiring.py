"""Composition of the token validator every app uses, from :class:`AuthSettings`.

:class:`AuthContainer` picks the adapter by ``config.mode`` and wraps it in the cache;
:func:`build_authenticator` is the one call apps make. Settings are checked first so a
misconfiguration fails at startup naming the environment variable, not at the first call.
"""

from __future__ import annotations

from dependency_injector import containers, providers

from zexec.adapters.auth_cache import CachingAuthenticator
from zexec.adapters.auth_http import HttpAuthenticator
from zexec.adapters.auth_static import StaticAuthenticator
from zexec.core.errors import ConfigurationError
from zexec.core.groups import parse_allowed_groups
from zexec.core.ports import Authenticator
from zexec.core.tokencache import TokenCache
from zexec.settings import AuthSettings


def oidc_authenticator(**options: object) -> Authenticator:
    """An :class:`~zexec.adapters.auth_oidc.OidcAuthenticator`, imported here: its JWT
    and cryptography libraries take a noticeable part of a process's start otherwise."""
    from zexec.adapters.auth_oidc import OidcAuthenticator

    return OidcAuthenticator(**options)  # type: ignore[arg-type]


class AuthContainer(containers.DeclarativeContainer):
    """``config`` takes ``AuthSettings().model_dump()``; ``authenticator`` is the product."""

    config = providers.Configuration()

    allowed_groups = providers.Callable(parse_allowed_groups, config.allowed_groups)

    backend = providers.Selector(
        config.mode,
        **{
            "http-post": providers.Singleton(
                HttpAuthenticator,
                url=config.url,
                mode="http-post",
                timeout=config.timeout,
                allowed_groups=allowed_groups,
            ),
            "http-get": providers.Singleton(
                HttpAuthenticator,
                url=config.url,
                mode="http-get",
                timeout=config.timeout,
                allowed_groups=allowed_groups,
            ),
            "static": providers.Singleton(
                StaticAuthenticator.from_file,
                config.static_file,
                allowed_groups=allowed_groups,
            ),
            "oidc": providers.Singleton(
                oidc_authenticator,
                jwks_url=config.jwks_url,
                issuer=config.issuer,
                audience=config.audience,
                allowed_groups=allowed_groups,
                timeout=config.timeout,
            ),
        },
    )

    token_cache = providers.Singleton(
        TokenCache,
        positive_ttl=config.positive_ttl,
        negative_ttl=config.negative_ttl,
    )

    authenticator = providers.Singleton(CachingAuthenticator, inner=backend, cache=token_cache)


#: Setting that each mode cannot do without.
_REQUIRED = {
    "http-post": ("url", "ZEXEC_AUTH_URL"),
    "http-get": ("url", "ZEXEC_AUTH_URL"),
    "static": ("static_file", "ZEXEC_AUTH_STATIC_FILE"),
    "oidc": ("jwks_url", "ZEXEC_AUTH_JWKS_URL"),
}


def check_settings(settings: AuthSettings) -> None:
    """Raise :class:`ConfigurationError` naming the missing or wrong setting."""
    if settings.mode not in _REQUIRED:
        raise ConfigurationError(
            f"ZEXEC_AUTH_MODE={settings.mode!r} is not one of {', '.join(_REQUIRED)}"
        )
    field, env = _REQUIRED[settings.mode]
    if not getattr(settings, field):
        raise ConfigurationError(f"ZEXEC_AUTH_MODE={settings.mode} needs {env} to be set")
    for name in ("timeout", "positive_ttl", "negative_ttl"):
        if getattr(settings, name) < 0:
            raise ConfigurationError(f"ZEXEC_AUTH_{name.upper()} must not be negative")


def build_authenticator(settings: AuthSettings | None = None, *, cached: bool = True) -> Authenticator:
    """The authenticator ``settings`` (default: from the environment) describe, wrapped
    in a :class:`CachingAuthenticator` unless ``cached`` is False (the broker keeps its
    own non-blocking cache and wants the raw one)."""
    settings = settings if settings is not None else AuthSettings()
    check_settings(settings)
    container = AuthContainer()
    container.config.from_dict(settings.model_dump())
    return container.authenticator() if cached else container.backend()
