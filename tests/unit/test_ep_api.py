"""EP API over fakes: the embedded SQLite catalog with the sample datasets, a static
authenticator, TestClient. Requests are shaped as ndp-ep 0.9.0 sends them."""

from __future__ import annotations

import json

import httpx
import pytest
import respx
from fastapi.testclient import TestClient

from zexec.adapters.auth_static import StaticAuthenticator
from zexec.adapters.catalog_sqlite import SAMPLE_DATASETS, SqliteCatalog, load_seed_file
from zexec.apps.ep_api import EP_API_VERSION, build_app_from_settings, create_app
from zexec.apps.ep_api.container import http_login
from zexec.core.errors import AuthUnavailable, CatalogUnavailable, Unauthenticated
from zexec.settings import AuthSettings, EPSettings

TOKENS = {
    "tok-alice": {
        "sub": "u-alice",
        "username": "alice",
        "groups": ["researchers"],
        "roles": ["user"],
        "email": "alice@example.org",
    },
    "tok-eve": {"sub": "u-eve", "username": "eve", "groups": ["visitors"]},
}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def catalog():
    return SqliteCatalog(seed=load_seed_file(SAMPLE_DATASETS))


def make(catalog, auth=None, login=None, **overrides):
    settings = EPSettings(**{"deploy_api_url": "http://deploy.example:8000/", **overrides})
    return create_app(settings, catalog, auth or StaticAuthenticator(TOKENS), login=login)


@pytest.fixture
def client(catalog):
    with TestClient(make(catalog)) as c:
        yield c


def version_tuple(v):
    return tuple(int(p) for p in v.split("."))


# ---------------------------------------------------------------------- status


def test_root_health_and_status_version_satisfy_ndp_ep(client):
    assert client.get("/").status_code == 200
    assert client.get("/health").json() == {"status": "ok"}
    body = client.get("/status/", headers=bearer("tok-alice")).json()
    # ndp-ep: "major.minor.patch" and >= 0.2.0, else it warns.
    assert version_tuple(body["version"]) >= (0, 2, 0)
    assert body["version"] == body["api_version"] == EP_API_VERSION
    assert body["local_catalog_backend"] == "sqlite"


def test_status_version_is_configurable(catalog):
    with TestClient(make(catalog, version="1.4.2")) as c:
        assert c.get("/status/").json()["version"] == "1.4.2"


def test_status_rexec_points_at_the_deploy_api(client):
    assert client.get("/status/rexec").json() == {
        "deployment_api_url": "http://deploy.example:8000"
    }


def test_status_rexec_without_deploy_api_is_404_with_advice(catalog):
    with TestClient(make(catalog, deploy_api_url="")) as c:
        r = c.get("/status/rexec")
    assert r.status_code == 404 and "ZEXEC_EP_DEPLOY_API_URL" in r.json()["detail"]


# ---------------------------------------------------------------------- user info


def test_user_info_returns_the_callers_claims(client):
    body = client.get("/user/info", headers=bearer("tok-alice")).json()
    assert body["sub"] == "u-alice" and body["username"] == "alice"
    assert body["groups"] == ["researchers"] and body["roles"] == ["user"]
    assert body["email"] == "alice@example.org"


@pytest.mark.parametrize("headers", [{}, bearer("wrong"), {"Authorization": "Basic eA=="}])
def test_user_info_without_valid_bearer_is_401(client, headers):
    r = client.get("/user/info", headers=headers)
    assert r.status_code == 401 and r.json()["detail"]


def test_user_info_forbidden_and_idp_down(catalog):
    with TestClient(make(catalog, auth=StaticAuthenticator(TOKENS, "researchers"))) as c:
        assert c.get("/user/info", headers=bearer("tok-eve")).status_code == 403

    class Down:
        def authenticate(self, token):
            raise AuthUnavailable("connection refused")

    with TestClient(make(catalog, auth=Down()), raise_server_exceptions=False) as c:
        r = c.get("/user/info", headers=bearer("tok-alice"))
    assert r.status_code == 503
    assert r.json()["detail"].startswith("identity provider unavailable")


# ---------------------------------------------------------------------- search


def names(resp):
    assert resp.status_code == 200, resp.text
    return [d["name"] for d in resp.json()]


def test_get_search_as_ndp_ep_sends_it(client):
    # search_datasets(["wildfire", "stream"]) -> params terms=..&terms=..&server=global
    r = client.get("/search", params={"terms": ["wildfire", "stream"], "server": "global"})
    assert names(r) == ["wifire-hpwren-camera-stream"]
    hit = r.json()[0]
    assert hit["owner_org"] == "wifire" and hit["resources"][0]["format"] == "stream"
    assert hit["extras"]["mapping"] == {"timestamp": "capture_time", "camera": "site_id"}
    assert set(hit) >= {"id", "name", "title", "owner_org", "description", "resources", "extras"}


def test_get_search_with_keys_and_null(client):
    r = client.get(
        "/search",
        params={"terms": ["noaa", "hurricane"], "keys": ["owner_org", "null"], "server": "local"},
    )
    assert names(r) == ["noaa-hurdat2-atlantic"]


@pytest.mark.parametrize("server", ["local", "global", "pre-ckan", "pre_ckan"])
def test_get_search_accepts_every_server_name(client, server):
    assert "noaa-oisst-v2-1-daily" in names(
        client.get("/search", params={"terms": ["ocean"], "server": server})
    )


def test_get_search_errors(client):
    r = client.get("/search", params={"terms": ["a", "b"], "keys": ["title"]})
    assert r.status_code == 400 and "number of keys" in r.json()["detail"]
    assert client.get("/search").status_code == 422
    assert client.get("/search", params={"terms": "x", "server": "mars"}).status_code == 422


def test_post_search(client):
    r = client.post(
        "/search", json={"resource_format": "geotiff", "owner_org": "wifire", "server": "local"}
    )
    assert names(r) == ["wifire-burnpro3d-fuel-maps"]
    r = client.post("/search", json={"filter_list": ["tags:soil moisture"], "search_term": "nasa"})
    assert names(r) == ["nasa-smap-soil-moisture"]
    r = client.post("/search", json={"filter_list": ["no-colon"]})
    assert r.status_code == 400 and "field:value" in r.json()["detail"]
    assert client.post("/search", json={"bogus_field": 1}).status_code == 422


def test_catalog_unavailable_is_503(catalog):
    class Broken:
        def search(self, terms, keys=None, limit=100):
            raise CatalogUnavailable("CKAN catalog is unreachable: ConnectError")

        advanced_search = None

    with TestClient(make(Broken()), raise_server_exceptions=False) as c:
        r = c.get("/search", params={"terms": ["x"]})
    assert r.status_code == 503 and "unreachable" in r.json()["detail"]


# ---------------------------------------------------------------------- login


def test_login_is_501_unless_configured(client):
    r = client.post("/user/login", json={"username": "alice", "password": "pw"})
    assert r.status_code == 501 and "token=" in r.json()["detail"]


def test_login_with_a_login_service(catalog):
    def login(user, password):
        if password != "pw":
            raise Unauthenticated("invalid username or password")
        return {"access_token": f"tok-{user}", "token_type": "bearer"}

    with TestClient(make(catalog, login=login)) as c:
        ok = c.post("/user/login", json={"username": "alice", "password": "pw"})
        bad = c.post("/user/login", json={"username": "alice", "password": "no"})
    assert ok.json()["access_token"] == "tok-alice"
    assert bad.status_code == 401


@respx.mock
def test_http_login_maps_the_services_answers():
    route = respx.post("http://idp.example/login")
    login = http_login("http://idp.example/login")
    route.mock(return_value=httpx.Response(200, json={"access_token": "abc"}))
    assert login("alice", "pw") == {"token_type": "bearer", "access_token": "abc"}
    assert json.loads(route.calls.last.request.content) == {"username": "alice", "password": "pw"}
    route.mock(return_value=httpx.Response(401, json={"detail": "no"}))
    with pytest.raises(Unauthenticated):
        login("alice", "bad")
    route.mock(return_value=httpx.Response(502, text="bad gateway"))
    with pytest.raises(AuthUnavailable):
        login("alice", "pw")
    route.mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(AuthUnavailable):
        login("alice", "pw")


# ---------------------------------------------------------------------- composition


def test_composition_root_with_a_seed_file(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            [
                {
                    "name": "lake-levels",
                    "title": "Lake Levels",
                    "notes": "Daily lake surface elevation",
                    "tags": ["water"],
                }
            ]
        )
    )
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    tokens.chmod(0o600)
    app = build_app_from_settings(
        EPSettings(seed_file=str(seed), catalog_db=str(tmp_path / "cat.db")),
        AuthSettings(mode="static", static_file=str(tokens)),
    )
    with TestClient(app) as c:
        assert names(c.get("/search", params={"terms": ["lake"]})) == ["lake-levels"]
        assert c.get("/user/info", headers=bearer("tok-alice")).json()["username"] == "alice"
