"""HttpAuthenticator against a fake identity provider served through respx."""

import json

import httpx
import pytest
import respx

from zexec.adapters.auth_http import HttpAuthenticator
from zexec.core.errors import AuthUnavailable, ConfigurationError, Forbidden, Unauthenticated

URL = "https://idp.example/auth"
GOOD = "good-token-Zq81"
NO_GROUP = "nogroup-token-Xy22"
BANNED = "banned-token-Pp93"

CLAIMS = {
    GOOD: {
        "sub": "a1b2",
        "username": "alice",
        "roles": ["user"],
        "groups": ["/NDP_EP/ep-xyz", {"path": "/org/team"}],
    },
    NO_GROUP: {"sub": "c3d4", "preferred_username": "carol", "groups": ["students"]},
}


class FakeIdp:
    """Answers like the deployed IdP, in the request shape of ``mode`` only: a request
    of the other shape finds no token and gets 401, so a wrong shape fails the test."""

    def __init__(self, mode):
        self.mode = mode

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = None
        if self.mode == "http-post" and request.method == "POST":
            token = json.loads(request.content).get("token")
        if self.mode == "http-get" and request.method == "GET":
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            token = token if scheme == "Bearer" else None
        if token == BANNED:
            return httpx.Response(403, json={"detail": "forbidden"})
        if token in CLAIMS:
            return httpx.Response(200, json=CLAIMS[token])
        return httpx.Response(401, json={"detail": f"bad token {token}"})


@pytest.fixture(params=["http-post", "http-get"])
def mode(request):
    return request.param


@pytest.fixture
def idp(mode):
    with respx.mock(assert_all_called=False) as router:
        router.route(url=URL).mock(side_effect=FakeIdp(mode))
        yield router


def make(mode, **kw):
    return HttpAuthenticator(URL, mode=mode, timeout=2.0, **kw)


def test_valid_token_gives_identity(idp, mode):
    ident = make(mode).authenticate(GOOD)
    assert ident.user_id == "a1b2"
    assert ident.username == "alice"
    assert ident.roles == ("user",)
    assert ident.groups == ("/NDP_EP/ep-xyz", "/org/team")
    assert ident.claims["sub"] == "a1b2"


def test_username_falls_back_to_preferred_username(idp, mode):
    assert make(mode).authenticate(NO_GROUP).username == "carol"


def test_401_is_unauthenticated(idp, mode):
    with pytest.raises(Unauthenticated):
        make(mode).authenticate("wrong-token")


def test_403_is_forbidden(idp, mode):
    with pytest.raises(Forbidden):
        make(mode).authenticate(BANNED)


def test_allowed_groups(idp, mode):
    auth = make(mode, allowed_groups="ndp_ep/ep-xyz, admins")
    assert auth.authenticate(GOOD).user_id == "a1b2"
    with pytest.raises(Forbidden) as exc:
        auth.authenticate(NO_GROUP)
    assert "ndp_ep/ep-xyz" in str(exc.value) and "admins" in str(exc.value)


def test_allowed_group_matched_through_dict_path(idp, mode):
    assert make(mode, allowed_groups=["ORG/TEAM"]).authenticate(GOOD).user_id == "a1b2"


def answering(mode, **response):
    router = respx.mock(assert_all_called=False)
    router.route(url=URL).mock(**response)
    return router


UNAVAILABLE = {
    "timeout": {"side_effect": httpx.ReadTimeout("timed out")},
    "connect": {"side_effect": httpx.ConnectError("connection refused")},
    "500": {"return_value": httpx.Response(500, text="boom")},
    "502": {"return_value": httpx.Response(502)},
    "404": {"return_value": httpx.Response(404)},
    "not-json": {"return_value": httpx.Response(200, text="<html>login</html>")},
    "json-list": {"return_value": httpx.Response(200, json=["sub"])},
    "no-sub": {"return_value": httpx.Response(200, json={"username": "alice"})},
}


@pytest.mark.parametrize("case", sorted(UNAVAILABLE))
def test_provider_trouble_is_unavailable(mode, case):
    with answering(mode, **UNAVAILABLE[case]), pytest.raises(AuthUnavailable) as exc:
        make(mode).authenticate(GOOD)
    assert URL in str(exc.value)


def test_timeout_message_says_so(mode):
    with answering(mode, **UNAVAILABLE["timeout"]), pytest.raises(AuthUnavailable) as exc:
        make(mode).authenticate(GOOD)
    assert "did not answer within 2s" in str(exc.value)


def test_token_never_in_error_text(mode):
    """Even when the transport error itself quotes the token."""
    secret = "s3cret-T0ken"
    leaky = {"side_effect": httpx.ConnectError(f"failed sending Bearer {secret}")}
    cases = [
        leaky,
        *UNAVAILABLE.values(),
        {"return_value": httpx.Response(401, text=secret)},
        {"return_value": httpx.Response(403, text=secret)},
    ]
    for response in cases:
        with answering(mode, **response), pytest.raises(Exception) as exc:
            make(mode).authenticate(secret)
        text = "".join(map(str, [exc.value, exc.value.__cause__, exc.value.__context__]))
        assert secret not in text


@pytest.mark.parametrize("token", ["", "with space", "new\nline", "ü-token", "x" * 20_000])
def test_malformed_tokens_are_refused_without_asking(mode, token):
    # No route is mocked: reaching the network would fail with AuthUnavailable.
    with respx.mock(assert_all_called=False), pytest.raises(Unauthenticated) as exc:
        make(mode).authenticate(token)
    assert token not in str(exc.value) or token == ""


def test_uses_the_given_client(idp, mode):
    client = httpx.Client()
    auth = HttpAuthenticator(URL, mode=mode, client=client)
    assert auth.authenticate(GOOD).user_id == "a1b2"
    auth.close()
    assert not client.is_closed  # not ours to close
    client.close()


@pytest.mark.parametrize(
    "kwargs",
    [{"url": ""}, {"url": "ftp://idp/auth"}, {"url": URL, "mode": "static"}],
)
def test_configuration_errors(kwargs):
    with pytest.raises(ConfigurationError):
        HttpAuthenticator(**kwargs)


@pytest.mark.parametrize("url, verifies", [("http://idp.local/auth", False),
                                           ("https://idp.example/auth", True)])
def test_certificates_are_loaded_only_for_an_https_identity_provider(url, verifies):
    import ssl

    auth = HttpAuthenticator(url)
    try:
        mode = auth._client._transport._pool._ssl_context.verify_mode
        assert (mode == ssl.CERT_REQUIRED) is verifies
    finally:
        auth.close()
