"""Composition of the token validator every app uses, from :class:`AuthSettings`.

:func:`build_authenticator` is the one call apps make: it picks the adapter by
``ZEXEC_AUTH_MODE`` (:data:`BACKENDS`) and wraps it in the cache. Settings are checked
first so a misconfiguration fails at startup naming the environment variable, not at the
first call.

A plain table rather than a ``dependency_injector`` Selector (the Deploy API and EP API
containers use the library for their own wiring and call this function as a provider):
the broker builds nothing else, and importing ``dependency_injector.containers`` pulls in
FastAPI and Starlette through its wiring module, ~0.4 s of CPU at every broker start.
"""

from __future__ import annotations

from collections.abc import Callable

from zexec.adapters.auth_cache import CachingAuthenticator
from zexec.adapters.auth_http import HttpAuthenticator
from zexec.adapters.auth_static import StaticAuthenticator
from zexec.core.errors import ConfigurationError
from zexec.core.groups import parse_allowed_groups
from zexec.core.ports import Authenticator
from zexec.core.tokencache import TokenCache
from zexec.settings import AuthSettings


def _http(mode: str) -> Callable[[AuthSettings, tuple[str, ...]], Authenticator]:
    def build(s: AuthSettings, groups: tuple[str, ...]) -> Authenticator:
        return HttpAuthenticator(url=s.url, mode=mode, timeout=s.timeout, allowed_groups=groups)

    return build


def _static(s: AuthSettings, groups: tuple[str, ...]) -> Authenticator:
    return StaticAuthenticator.from_file(s.static_file, allowed_groups=groups)


def _oidc(s: AuthSettings, groups: tuple[str, ...]) -> Authenticator:
    # Imported here: its JWT and cryptography libraries take a noticeable part of a
    # process's start otherwise.
    from zexec.adapters.auth_oidc import OidcAuthenticator

    return OidcAuthenticator(jwks_url=s.jwks_url, issuer=s.issuer, audience=s.audience,
                             allowed_groups=groups, timeout=s.timeout)


#: ``ZEXEC_AUTH_MODE`` -> how to build that adapter from the settings and allowed groups.
BACKENDS: dict[str, Callable[[AuthSettings, tuple[str, ...]], Authenticator]] = {
    "http-post": _http("http-post"),
    "http-get": _http("http-get"),
    "static": _static,
    "oidc": _oidc,
}


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
    backend = BACKENDS[settings.mode](settings, parse_allowed_groups(settings.allowed_groups))
    if not cached:
        return backend
    cache = TokenCache(positive_ttl=settings.positive_ttl, negative_ttl=settings.negative_ttl)
    return CachingAuthenticator(inner=backend, cache=cache)
