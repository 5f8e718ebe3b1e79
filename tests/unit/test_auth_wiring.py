"""build_authenticator: settings -> the right cached adapter."""

import json
import os

import httpx
import pytest
import respx

from zexec.adapters.auth_cache import CachingAuthenticator
from zexec.adapters.auth_http import HttpAuthenticator
from zexec.adapters.auth_oidc import OidcAuthenticator
from zexec.adapters.auth_static import StaticAuthenticator
from zexec.apps.auth_wiring import _REQUIRED, BACKENDS, build_authenticator
from zexec.core.errors import ConfigurationError, Forbidden, Unauthenticated
from zexec.settings import AuthSettings

URL = "https://idp.example/auth"


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tok": {"sub": "u1", "groups": ["/Team"]}}))
    os.chmod(path, 0o600)
    return str(path)


def test_static(token_file):
    auth = build_authenticator(AuthSettings(mode="static", static_file=token_file))
    assert isinstance(auth, CachingAuthenticator)
    assert isinstance(auth.inner, StaticAuthenticator)
    assert auth.authenticate("tok").user_id == "u1"
    with pytest.raises(Unauthenticated):
        auth.authenticate("other")


def test_allowed_groups_and_ttls_reach_the_adapters(token_file):
    settings = AuthSettings(
        mode="static",
        static_file=token_file,
        allowed_groups="admins, x",
        positive_ttl=7,
        negative_ttl=2,
    )
    auth = build_authenticator(settings)
    assert (auth.cache.positive_ttl, auth.cache.negative_ttl) == (7, 2)
    with pytest.raises(Forbidden, match="admins"):
        auth.authenticate("tok")


@pytest.mark.parametrize("mode", ["http-post", "http-get"])
def test_http_modes(mode):
    def idp(request):
        ok = (request.method == "POST") == (mode == "http-post")
        return httpx.Response(200, json={"sub": "u9"}) if ok else httpx.Response(401)

    auth = build_authenticator(AuthSettings(mode=mode, url=URL, timeout=3))
    assert isinstance(auth.inner, HttpAuthenticator)
    assert (auth.inner.mode, auth.inner.timeout) == (mode, 3)
    with respx.mock(assert_all_called=False) as router:
        router.route(url=URL).mock(side_effect=idp)
        assert auth.authenticate("tok").user_id == "u9"
    auth.close()


def test_oidc():
    settings = AuthSettings(mode="oidc", jwks_url=URL, issuer="https://iss", audience="zexec")
    auth = build_authenticator(settings)
    assert isinstance(auth.inner, OidcAuthenticator)
    assert (auth.inner.issuer, auth.inner.audience) == ("https://iss", "zexec")


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"mode": "static"}, "ZEXEC_AUTH_STATIC_FILE"),
        ({"mode": "http-post"}, "ZEXEC_AUTH_URL"),
        ({"mode": "http-get"}, "ZEXEC_AUTH_URL"),
        ({"mode": "oidc"}, "ZEXEC_AUTH_JWKS_URL"),
        ({"mode": "static", "static_file": "/nonexistent/tokens.json"}, "/nonexistent/tokens.json"),
        ({"mode": "http-post", "url": "idp.example/auth"}, "http(s)"),
        ({"mode": "http-post", "url": URL, "timeout": -1}, "ZEXEC_AUTH_TIMEOUT"),
    ],
)
def test_configuration_errors(settings, says):
    with pytest.raises(ConfigurationError) as exc:
        build_authenticator(AuthSettings(**settings))
    assert says in str(exc.value)


def test_settings_from_environment(monkeypatch, token_file):
    monkeypatch.setenv("ZEXEC_AUTH_MODE", "static")
    monkeypatch.setenv("ZEXEC_AUTH_STATIC_FILE", token_file)
    assert build_authenticator().authenticate("tok").user_id == "u1"


def test_every_mode_has_a_builder_and_a_required_setting():
    assert set(BACKENDS) == set(_REQUIRED) == {"http-post", "http-get", "static", "oidc"}


def test_the_broker_gets_the_raw_adapter(token_file):
    auth = build_authenticator(AuthSettings(mode="static", static_file=token_file),
                               cached=False)
    assert isinstance(auth, StaticAuthenticator) and auth.authenticate("tok").user_id == "u1"
