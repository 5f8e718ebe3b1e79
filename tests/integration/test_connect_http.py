"""``zexec.connect`` / ``environment`` / ``status`` / ``terminate`` against the real Deploy
API and EP API under uvicorn (real HTTP), with the in-memory orchestrator driving the
server lifecycle. No broker is needed: the client connects lazily, on the first call."""

from __future__ import annotations

import pytest

import zexec
from tests.helpers.http import run_uvicorn
from zexec.adapters.auth_static import StaticAuthenticator
from zexec.adapters.catalog_sqlite import SqliteCatalog
from zexec.adapters.orchestrator_memory import InMemoryOrchestrator
from zexec.apps import deploy_api, ep_api
from zexec.apps.client.connect import PYTHON
from zexec.settings import DeploySettings, EPSettings

TOKENS = {
    "tok-alice": {"sub": "u-alice", "username": "alice"},
    "tok-bob": {"sub": "u-bob", "username": "bob"},
}


class Scripted(InMemoryOrchestrator):
    """New servers walk pending -> installing -> starting -> ready, one phase per status
    poll, unless their requirements name ``brokenpkg``: then the build fails."""

    STEPS = ("installing", "starting", "ready")

    def __init__(self) -> None:
        super().__init__(initial_phase="pending")
        self.step: dict[str, int] = {}

    def ensure(self, user, spec, force=False):
        st = super().ensure(user, spec, force)
        if st.phase == "pending":
            self.step[user.user_id] = 0
        return st

    def status(self, user_id):
        cur = super().status(user_id)
        n = self.step.get(user_id)
        if cur is None or n is None:
            return cur
        if any(r.startswith("brokenpkg") for r in cur.env.requirements):
            del self.step[user_id]
            return self.advance(
                user_id,
                "failed",
                "building the environment failed: exit 1",
                ["Because brokenpkg was not found, no solution exists."],
            )
        self.step[user_id] = n + 1
        if n + 1 >= len(self.STEPS):
            del self.step[user_id]
        return self.advance(user_id, self.STEPS[n], log_tail=[f"step {n}"])


@pytest.fixture(scope="module")
def ep_url():
    auth = StaticAuthenticator(TOKENS)
    orch = Scripted()
    settings = DeploySettings(
        orchestrator="memory", broker_external_host="127.0.0.1", broker_external_port=5999,
        max_cpus=2, max_memory=4096,
    )
    with run_uvicorn(deploy_api.create_app(settings, orch, auth)) as deploy_url:
        eapp = ep_api.create_app(EPSettings(deploy_api_url=deploy_url), SqliteCatalog(), auth)
        with run_uvicorn(eapp) as url:
            yield url


@pytest.fixture
def alice(ep_url):
    conn = zexec.connect(ep_url, "tok-alice")
    yield conn
    conn.terminate()
    conn.close()


def test_connect_discovers_through_the_real_apps(alice, ep_url):
    assert alice.deploy_url.endswith("/rexec") and alice.deploy_url.startswith("http://127.0.0.1:")
    assert alice.broker_url == "tcp://127.0.0.1:5999"
    assert zexec.get_default_client() is alice.client
    assert alice.user["username"] == "alice"


def test_environment_waits_for_ready_and_is_idempotent(alice, capsys):
    st = alice.environment(["six"], poll=0.01)
    assert st["phase"] == "ready" and st["env"]["python"] == PYTHON
    assert st["env"]["requirements"] == ["six"]
    phases = [ln.split("]")[1].split()[0] for ln in capsys.readouterr().err.splitlines()[:-1]]
    assert phases == ["pending", "installing", "starting"]
    again = alice.environment(["six"], progress=False)  # same set: no rebuild, ready now
    assert again["outcome"] == "unchanged" and again["phase"] == "ready"
    assert alice.status()["phase"] == "ready"


def test_conflict_then_force(alice):
    alice.environment(["six"], progress=False, poll=0.01)
    with pytest.raises(zexec.EnvironmentConflict, match=r"force=True"):
        alice.environment(["attrs"], progress=False)
    st = alice.environment(["attrs"], force=True, progress=False, poll=0.01)
    assert st["env"]["requirements"] == ["attrs"]


@pytest.mark.parametrize(
    "requirements, reason",
    [
        (["six; rm -rf /"], "requirement 'six; rm -rf /'"),
        (["--index-url https://evil.example"], "pip options"),
        (["python>=3.8"], "the python pin must be exactly python==X.Y"),
    ],
)
def test_invalid_requirements_are_refused_with_the_reason(alice, requirements, reason):
    with pytest.raises(zexec.InvalidEnvironment, match=reason.replace("(", r"\(")):
        alice.environment(requirements, progress=False)


def test_resources_reach_the_server_and_its_status(alice):
    st = alice.environment(["six"], progress=False, poll=0.01, cpus=1, memory=1024, workers=2)
    assert st["env"]["resources"] == {"cpus": 1.0, "memory": 1024, "workers": 2}
    assert st["resources"]["cpus"] == 1.0 and st["resources"]["workers"] == 2
    assert alice.status()["resources"]["memory"] == 1024
    with pytest.raises(zexec.EnvironmentConflict, match=r"requested cpus=2"):
        alice.environment(["six"], progress=False, cpus=2)


def test_a_request_over_the_site_limit_raises_naming_the_limit(alice):
    with pytest.raises(zexec.ResourceLimitExceeded) as info:
        alice.environment(["six"], progress=False, cpus=3)
    msg = str(info.value)
    assert "cpus=3 is above this site's limit of 2" in msg
    assert "ZEXEC_DEPLOY_MAX_CPUS=2" in msg and "deployApi.resourceLimits.maxCpus" in msg
    assert isinstance(info.value, zexec.InvalidEnvironment)
    assert alice.status() is None  # nothing was spawned
    with pytest.raises(zexec.ResourceLimitExceeded, match="ZEXEC_DEPLOY_MAX_MEMORY=4096"):
        zexec.environment(["six"], progress=False, memory=8192)  # the module function


@pytest.mark.parametrize("kwargs, reason", [
    ({"cpus": 0}, "cpus must be at least 0.001"),
    ({"memory": "4Gi"}, "memory is a whole number of MiB"),
    ({"workers": -1}, "workers must be 1 or more"),
])
def test_wrong_resource_values_are_refused_with_the_reason(alice, kwargs, reason):
    with pytest.raises(zexec.InvalidEnvironment, match=reason) as info:
        alice.environment(["six"], progress=False, **kwargs)
    assert not isinstance(info.value, zexec.ResourceLimitExceeded)


def test_failed_build_raises_with_the_installer_output(alice):
    with pytest.raises(zexec.EnvironmentFailed) as info:
        alice.environment(["brokenpkg"], progress=False, poll=0.01)
    assert "brokenpkg was not found" in str(info.value)
    assert info.value.reason == "building the environment failed: exit 1"


def test_users_see_and_terminate_only_their_own_server(alice, ep_url):
    alice.environment(["six"], progress=False, poll=0.01)
    bob = zexec.connect(ep_url, "tok-bob")
    try:
        assert bob.status() is None
        assert bob.terminate()["terminated"] is False
        assert alice.status()["phase"] == "ready"
    finally:
        bob.close()
    assert alice.terminate()["terminated"] is True
    assert alice.status() is None


def test_a_wrong_token_fails_at_connect(ep_url):
    with pytest.raises(zexec.ZexecError, match="check the token"):
        zexec.connect(ep_url, "not-a-token")
