"""OidcAuthenticator: real RSA keys generated here, JWKS served through respx."""

import time

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from zexec.adapters.auth_oidc import OidcAuthenticator
from zexec.core.errors import AuthUnavailable, ConfigurationError, Forbidden, Unauthenticated

JWKS_URL = "https://idp.example/realms/ndp/protocol/openid-connect/certs"
ISSUER = "https://idp.example/realms/ndp"
AUDIENCE = "zexec"


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


KEY1, KEY2, ROGUE = new_key(), new_key(), new_key()


def jwk(private_key, kid):
    return {**RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True), "kid": kid, "use": "sig"}


class FakeJwks:
    """The provider's JWKS endpoint: serves ``keys``, or fails while ``down``."""

    def __init__(self, *keys):
        self.keys = list(keys)
        self.down = False
        self.served = 0

    def __call__(self, request):
        if self.down:
            raise httpx.ConnectError("connection refused")
        self.served += 1
        return httpx.Response(200, json={"keys": self.keys})


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def token(key=KEY1, kid="k1", alg="RS256", **claims):
    now = int(time.time())
    body = {
        "sub": "a1b2",
        "preferred_username": "alice",
        "groups": ["/ndp_ep/ep-xyz"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"kid": kid} if kid else {}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


@pytest.fixture
def jwks():
    fake = FakeJwks(jwk(KEY1, "k1"))
    with respx.mock(assert_all_called=False) as router:
        router.get(JWKS_URL).mock(side_effect=fake)
        yield fake


@pytest.fixture
def clock():
    return Clock()


def make(clock, **kw):
    kw = {"issuer": ISSUER, "audience": AUDIENCE, "jwks_ttl": 300, "refetch_interval": 5, **kw}
    return OidcAuthenticator(JWKS_URL, clock=clock, **kw)


def test_valid_token(jwks, clock):
    ident = make(clock).authenticate(token())
    assert (ident.user_id, ident.username, ident.groups) == ("a1b2", "alice", ("/ndp_ep/ep-xyz",))
    assert ident.claims["iss"] == ISSUER


def test_keys_are_cached(jwks, clock):
    auth = make(clock)
    for _ in range(3):
        auth.authenticate(token())
    assert jwks.served == 1
    clock.now += 300  # ttl over: refreshed on next use
    auth.authenticate(token())
    assert jwks.served == 2


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (lambda: token(exp=int(time.time()) - 120), "expired"),
        (lambda: token(key=ROGUE), "Signature verification failed"),
        (lambda: token(iss="https://evil.example"), "issuer"),
        (lambda: token(aud="other-service"), "udience"),
        (lambda: token(exp=None), "exp"),
        (lambda: token(sub=None), "sub"),
        (lambda: "not.a.jwt", "malformed"),
        (lambda: "garbage", "malformed"),
    ],
)
def test_invalid_tokens_are_unauthenticated(jwks, clock, bad, says):
    t = bad()
    with pytest.raises(Unauthenticated) as exc:
        make(clock).authenticate(t)
    assert says in str(exc.value)
    assert t not in str(exc.value)


def test_refused_algorithms(jwks, clock):
    unsigned = jwt.encode({"sub": "a1b2", "exp": int(time.time()) + 60}, None, algorithm="none")
    hmac = jwt.encode({"sub": "a1b2", "exp": int(time.time()) + 60}, "x" * 32, algorithm="HS256")
    for t in (unsigned, hmac):
        with pytest.raises(Unauthenticated, match="refused algorithm"):
            make(clock).authenticate(t)
    assert jwks.served == 0  # refused before any key lookup


def test_leeway_tolerates_small_clock_skew(jwks, clock):
    assert make(clock, leeway=60).authenticate(token(exp=int(time.time()) - 10)).user_id == "a1b2"


def test_key_rotation_refetches_on_unknown_kid(jwks, clock):
    auth = make(clock)
    auth.authenticate(token())
    jwks.keys.append(jwk(KEY2, "k2"))  # provider rotates in a new key
    clock.now += 5  # past the refetch interval since the first fetch
    assert auth.authenticate(token(key=KEY2, kid="k2")).user_id == "a1b2"
    assert jwks.served == 2


def test_unknown_kid_refetch_is_rate_limited(jwks, clock):
    auth = make(clock)
    auth.authenticate(token())
    forged = token(key=ROGUE, kid="nope")
    with pytest.raises(Unauthenticated):  # keys were fetched just now: no refetch yet
        auth.authenticate(forged)
    assert jwks.served == 1
    clock.now += 5
    for _ in range(5):
        with pytest.raises(Unauthenticated, match="does not publish"):
            auth.authenticate(forged)
    assert jwks.served == 2  # the first unknown kid refetched once; the rest did not
    clock.now += 5
    with pytest.raises(Unauthenticated):
        auth.authenticate(forged)
    assert jwks.served == 3


def test_token_without_kid_uses_the_only_key(jwks, clock):
    assert make(clock).authenticate(token(kid=None)).user_id == "a1b2"


def test_jwks_unreachable_and_key_not_cached(jwks, clock):
    jwks.down = True
    with pytest.raises(AuthUnavailable) as exc:
        make(clock).authenticate(token())
    assert JWKS_URL in str(exc.value)


def test_jwks_unreachable_but_key_cached_keeps_working(jwks, clock):
    auth = make(clock)
    auth.authenticate(token())
    jwks.down = True
    clock.now += 1000  # keys stale; the refresh fails; the known key still serves
    assert auth.authenticate(token()).user_id == "a1b2"
    with pytest.raises(AuthUnavailable):  # but an unknown key cannot be told from a new one
        auth.authenticate(token(key=KEY2, kid="k2"))


def test_jwks_recovers_after_outage(jwks, clock):
    auth = make(clock)
    jwks.down = True
    with pytest.raises(AuthUnavailable):
        auth.authenticate(token())
    jwks.down = False
    clock.now += 5
    assert auth.authenticate(token()).user_id == "a1b2"


@pytest.mark.parametrize(
    "response",
    [httpx.Response(500), httpx.Response(200, text="nope"), httpx.Response(200, json={"keys": []})],
)
def test_unusable_jwks_is_unavailable(clock, response):
    with respx.mock(assert_all_called=False) as router:
        router.get(JWKS_URL).mock(return_value=response)
        with pytest.raises(AuthUnavailable):
            make(clock).authenticate(token())


def test_allowed_groups(jwks, clock):
    auth = make(clock, allowed_groups="NDP_EP/ep-xyz")
    assert auth.authenticate(token()).user_id == "a1b2"
    with pytest.raises(Forbidden, match="NDP_EP/ep-xyz"):
        auth.authenticate(token(groups=[{"path": "/students"}]))
    assert auth.authenticate(token(groups=[{"path": "/ndp_ep/EP-XYZ"}])).user_id == "a1b2"


def test_issuer_and_audience_optional(jwks, clock):
    t = token(iss="anything", aud="anyone")
    assert make(clock, issuer="", audience="").authenticate(t).user_id == "a1b2"


def test_configuration_errors():
    with pytest.raises(ConfigurationError):
        OidcAuthenticator("")
    with pytest.raises(ConfigurationError, match="HS256"):
        OidcAuthenticator(JWKS_URL, algorithms=["RS256", "HS256"])
