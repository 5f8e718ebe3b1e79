"""Resources through the Deploy API over the in-memory orchestrator: the JSON spawn's
fields, the 422s (the limit named), the status view, and the legacy paths unchanged."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from zexec.adapters.auth_static import StaticAuthenticator
from zexec.adapters.orchestrator_memory import InMemoryOrchestrator
from zexec.apps.deploy_api import create_app
from zexec.apps.deploy_api.service import resource_limits
from zexec.core.model import Resources
from zexec.core.resources import ResourceLimits
from zexec.settings import DeploySettings

TOKENS = {"tok-alice": {"sub": "u-alice", "username": "alice"}}
AUTH = {"Authorization": "Bearer tok-alice"}
BASE = ["python==3.12", "numpy>=1.26"]


@pytest.fixture
def api():
    settings = DeploySettings(orchestrator="memory", legacy_spawn_wait=0, max_cpus=2,
                              max_memory=4096, max_gpus=0, max_workers=4)
    orch = InMemoryOrchestrator(initial_phase="ready")
    with TestClient(create_app(settings, orch, StaticAuthenticator(TOKENS))) as client:
        yield client, orch


def spawn(client, **fields):
    return client.post("/rexec/spawn", json={"requirements": BASE, **fields}, headers=AUTH)


def test_a_json_spawn_with_resources_reaches_the_orchestrator_and_the_status(api):
    client, orch = api
    r = spawn(client, cpus=1.5, memory=2048, workers=2)
    assert r.status_code == 200, r.text
    assert orch.servers["u-alice"].env.resources == Resources(cpus=1.5, memory=2048, workers=2)
    body = r.json()
    assert body["env"]["resources"] == {"cpus": 1.5, "memory": 2048, "workers": 2}
    assert "cpus=1.5, memory=2048 MiB, workers=2" in body["message"]
    st = client.get("/rexec/status", headers=AUTH).json()
    assert st["resources"]["cpus"] == 1.5 and st["resources"]["workers"] == 2
    assert "nothing is enforced" in st["resources"]["note"]


def test_same_resources_again_is_unchanged_other_ones_conflict_force_replaces(api):
    client, orch = api
    assert spawn(client, cpus=1).json()["outcome"] == "created"
    assert spawn(client, cpus=1.0).json()["outcome"] == "unchanged"
    r = spawn(client, cpus=2)
    assert r.status_code == 409 and "requested cpus=2" in r.json()["detail"]
    r = spawn(client, cpus=2, force=True)
    assert r.status_code == 200 and r.json()["outcome"] == "replaced"
    assert orch.servers["u-alice"].env.resources.cpus == 2.0


@pytest.mark.parametrize("fields, named", [
    ({"cpus": 3}, "ZEXEC_DEPLOY_MAX_CPUS=2"),
    ({"memory": 8192}, "ZEXEC_DEPLOY_MAX_MEMORY=4096"),
    ({"gpus": 1}, "ZEXEC_DEPLOY_MAX_GPUS=0"),
    ({"workers": 5}, "ZEXEC_DEPLOY_MAX_WORKERS=4"),
])
def test_over_a_limit_is_422_naming_it_and_nothing_is_spawned(api, fields, named):
    client, orch = api
    r = spawn(client, **fields)
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "RESOURCE_LIMIT" and named in body["detail"]
    assert "u-alice" not in orch.servers
    assert not any(c[0] == "ensure" for c in orch.calls)


@pytest.mark.parametrize("fields, why", [
    ({"cpus": 0}, "cpus must be at least"),
    ({"cpus": "two"}, "cpus must be a number"),
    ({"memory": "4Gi"}, "whole number of MiB"),
    ({"workers": 0}, "workers must be 1 or more"),
])
def test_wrong_values_are_422_with_the_reason(api, fields, why):
    client, orch = api
    r = spawn(client, **fields)
    assert r.status_code == 422
    assert r.json()["code"] == "INVALID_ENVIRONMENT" and why in r.json()["detail"]
    assert "u-alice" not in orch.servers


def test_without_resources_the_env_view_is_what_it_always_was(api):
    client, orch = api
    legacy = {"requirments": BASE, "force_reinstall": "False", "token": "tok-alice"}
    body = client.post("/rexec/spawn", data=legacy).json()
    assert set(body["env"]) == {"python", "requirements", "digest"}
    assert orch.servers["u-alice"].env.resources == Resources()
    # and a JSON spawn without resources is the same server as the legacy one
    assert spawn(client).json()["outcome"] == "unchanged"


def test_the_default_worker_count_comes_from_the_selected_orchestrator(monkeypatch):
    local = DeploySettings(orchestrator="local", server_workers=3)
    assert resource_limits(local).default_workers == 3
    monkeypatch.setenv("ZEXEC_K8S_SERVER_WORKERS", "5")
    assert resource_limits(DeploySettings(orchestrator="kubernetes")).default_workers == 5
    assert resource_limits(DeploySettings(orchestrator="memory")).default_workers is None


def test_asking_for_the_default_worker_count_is_the_same_server():
    settings = DeploySettings(orchestrator="memory", legacy_spawn_wait=0)
    limits = ResourceLimits(4, 8192, 0, 8, default_workers=2)
    orch = InMemoryOrchestrator(initial_phase="ready")
    app = create_app(settings, orch, StaticAuthenticator(TOKENS), resource_limits=limits)
    with TestClient(app) as client:
        assert spawn(client).json()["outcome"] == "created"
        assert spawn(client, workers=2).json()["outcome"] == "unchanged"
        assert spawn(client, workers=3).status_code == 409
