"""The development IdP under a real uvicorn, validated by HttpAuthenticator in both modes."""

import httpx
import pytest

from tests.helpers.http import run_uvicorn
from zexec.adapters.auth_http import HttpAuthenticator
from zexec.apps.devidp import create_app, generate_tokens, user_id_for
from zexec.core.errors import AuthUnavailable, ConfigurationError, Forbidden, Unauthenticated


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    path = tmp_path_factory.mktemp("devidp") / "tokens.json"
    tokens = generate_tokens(path, ["alice", "bob"])
    with run_uvicorn(create_app(path)) as base_url:
        yield base_url, tokens


@pytest.mark.parametrize("mode", ["http-post", "http-get"])
def test_http_authenticator_against_devidp(idp, mode):
    base_url, tokens = idp
    auth = HttpAuthenticator(f"{base_url}/auth", mode=mode, timeout=10)
    try:
        alice = auth.authenticate(tokens["alice"])
        assert (alice.user_id, alice.username, alice.groups) == (
            user_id_for("alice"),
            "alice",
            ("zexec-users",),
        )
        assert auth.authenticate(tokens["bob"]).username == "bob"
        with pytest.raises(Unauthenticated):
            auth.authenticate("not-a-token")
    finally:
        auth.close()


@pytest.mark.parametrize("mode", ["http-post", "http-get"])
def test_group_restriction(idp, mode):
    base_url, tokens = idp
    ok = HttpAuthenticator(f"{base_url}/auth", mode=mode, allowed_groups="/ZEXEC-USERS")
    assert ok.authenticate(tokens["alice"]).username == "alice"
    denied = HttpAuthenticator(f"{base_url}/auth", mode=mode, allowed_groups="admins")
    with pytest.raises(Forbidden, match="admins"):
        denied.authenticate(tokens["alice"])


def test_contract_details(idp):
    base_url, tokens = idp
    with httpx.Client(base_url=base_url) as http:
        assert http.get("/healthz").json() == {"status": "ok", "users": 2}
        r = http.get("/auth")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert (
            http.get("/auth", headers={"Authorization": f"Basic {tokens['alice']}"}).status_code
            == 401
        )
        assert http.post("/auth", content=b"not json").status_code == 401
        assert http.post("/auth", json={"token": 5}).status_code == 401
        assert http.post("/auth", json=["x"]).status_code == 401
        claims = http.post("/auth", json={"token": tokens["bob"]}).json()
        assert claims["sub"] == user_id_for("bob")


def test_wrong_path_is_unavailable_not_unauthenticated(idp):
    base_url, tokens = idp
    with pytest.raises(AuthUnavailable, match="404"):
        HttpAuthenticator(f"{base_url}/nope").authenticate(tokens["alice"])


def test_bad_tokens_file_fails_at_creation(tmp_path):
    with pytest.raises(ConfigurationError):
        create_app(tmp_path / "missing.json")
