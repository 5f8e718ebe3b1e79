"""The TTL reaper on the kmock API emulator: an idle user's namespace is stamped, then
deleted after the TTL; a live server's never is; a respawn restarts the clock; two
replicas sweeping together are harmless; the background thread does it on its own."""

from __future__ import annotations

import time

import pytest
from kmock_support import K8S_SETTINGS, bare_plugin_manager
from kubernetes import client
from orch_support import SECRET
from test_orchestrator_k8s import SIX, obj, set_pod_status

from zexec.adapters.orchestrator_k8s import KubernetesOrchestrator
from zexec.adapters.orchestrator_k8s.reaper import (
    ANN_IDLE_SINCE,
    NamespaceReaper,
    sweep_interval,
)
from zexec.core.model import UserIdentity

pytest_plugins = ["k8s_fixtures"]

TTL = 100.0
READY = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def stamp(emu, ns: str) -> str | None:
    found = obj(emu, "namespaces", None, ns)
    assert found is not None, ns
    return (found["metadata"].get("annotations") or {}).get(ANN_IDLE_SINCE)


def orchestrator(api, clock, ttl: float = TTL) -> KubernetesOrchestrator:
    settings = K8S_SETTINGS.model_copy(update={"namespace_ttl": ttl})
    return KubernetesOrchestrator(api, settings, SECRET, bare_plugin_manager(), clock=clock)


def test_an_idle_namespace_is_deleted_after_the_ttl(kube):
    emu, api = kube
    clock = Clock()
    orch = orchestrator(api, clock)
    reaper = NamespaceReaper(orch, TTL, clock)
    orch.ensure(UserIdentity("rita"), SIX)
    ns = "zexec-u-rita"
    set_pod_status(kube, ns, READY)
    assert ns not in reaper.sweep() and stamp(emu, ns) is None  # alive: no clock
    set_pod_status(kube, ns, {"phase": "Succeeded"})  # the server's idle exit
    assert reaper.sweep() == [] and float(stamp(emu, ns)) == clock.now
    clock.now += TTL  # not *more* than the TTL yet
    assert ns not in reaper.sweep() and orch.status("rita").phase == "terminated"
    clock.now += 1
    assert ns in reaper.sweep()
    assert obj(emu, "namespaces", None, ns) is None and orch.status("rita") is None
    # Nothing left to do, and a later spawn starts from scratch.
    assert ns not in reaper.sweep()
    assert orch.ensure(UserIdentity("rita"), SIX).phase == "pending"


def test_a_live_server_is_never_reaped_and_a_respawn_restarts_the_clock(kube):
    emu, api = kube
    clock = Clock()
    orch = orchestrator(api, clock)
    reaper = NamespaceReaper(orch, TTL, clock)
    user = UserIdentity("sven")
    orch.ensure(user, SIX)
    ns = "zexec-u-sven"
    assert ns not in reaper.sweep() and stamp(emu, ns) is None  # pending: being built
    set_pod_status(kube, ns, {"phase": "Failed", "containerStatuses": [
        {"name": "server", "state": {"terminated": {"exitCode": 1}}}]})  # fmt: skip
    reaper.sweep()
    assert stamp(emu, ns) is not None
    # The user spawns again before the TTL: the rebuilt pod clears the stamp ...
    clock.now += TTL / 2
    assert orch.ensure(user, SIX).phase == "pending"
    assert stamp(emu, ns) is None
    # ... and a server that is back (say, a stamp from a sweep racing the spawn) loses it.
    client.CoreV1Api(api).patch_namespace(
        ns, {"metadata": {"annotations": {ANN_IDLE_SINCE: "1.0"}}})
    set_pod_status(kube, ns, READY)
    clock.now += 10 * TTL
    assert ns not in reaper.sweep() and stamp(emu, ns) is None
    assert orch.status("sven").phase == "ready"


def test_two_replicas_sweeping_together_are_harmless(kube):
    emu, api = kube
    clock = Clock()
    one, two = orchestrator(api, clock), orchestrator(api, clock)
    one.ensure(UserIdentity("tess"), SIX)
    ns = "zexec-u-tess"
    set_pod_status(kube, ns, {"phase": "Succeeded"})
    NamespaceReaper(one, TTL, clock).sweep()
    first = stamp(emu, ns)
    clock.now += 30
    NamespaceReaper(two, TTL, clock).sweep()  # the other replica keeps the first stamp
    assert stamp(emu, ns) == first
    clock.now += TTL
    assert ns in NamespaceReaper(one, TTL, clock).sweep()
    assert ns not in NamespaceReaper(two, TTL, clock).sweep()  # already gone: no error
    assert obj(emu, "namespaces", None, ns) is None


def test_foreign_and_unstamped_garbage_is_left_alone(kube):
    emu, api = kube
    clock = Clock()
    orch = orchestrator(api, clock)
    core = client.CoreV1Api(api)
    # Our label and prefix but no owner: not a user's namespace, never touched.
    core.create_namespace({"metadata": {"name": "zexec-u-ursula", "labels": {
        "app.kubernetes.io/managed-by": "zexec"}, "annotations": {ANN_IDLE_SINCE: "1.0"}}})
    orch.ensure(UserIdentity("vera"), SIX)
    set_pod_status(kube, "zexec-u-vera", {"phase": "Succeeded"})
    core.patch_namespace("zexec-u-vera", {"metadata": {"annotations": {
        ANN_IDLE_SINCE: "not a number"}}})
    clock.now += 10 * TTL
    reaper = NamespaceReaper(orch, TTL, clock)
    swept = reaper.sweep()
    assert "zexec-u-ursula" not in swept and "zexec-u-vera" not in swept
    assert float(stamp(emu, "zexec-u-vera")) == clock.now  # an unreadable stamp restarts
    assert obj(emu, "namespaces", None, "zexec-u-ursula") is not None


def test_the_background_thread_reaps_until_closed(kube):
    emu, api = kube
    clock = Clock()
    orch = orchestrator(api, clock, ttl=5.0)
    orch.ensure(UserIdentity("wade"), SIX)
    set_pod_status(kube, "zexec-u-wade", {"phase": "Succeeded"})
    orch.start_reaper(interval=0.05)
    try:
        deadline = time.monotonic() + 60  # a generous bound on a stuck thread, not a measure
        while stamp(emu, "zexec-u-wade") is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        clock.now += 6
        while obj(emu, "namespaces", None, "zexec-u-wade") is not None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        orch.close()
    assert orch.reaper is None
    orch.close()  # twice is fine


def test_a_zero_ttl_never_starts_a_reaper(kube):
    orch = orchestrator(kube[1], Clock(), ttl=0)
    orch.start_reaper()
    assert orch.reaper is None
    with pytest.raises(ValueError):
        NamespaceReaper(orch, 0)


def test_the_sweep_interval_follows_the_ttl():
    assert sweep_interval(86400) == 300.0
    assert sweep_interval(600) == 60.0
    assert sweep_interval(2) == 1.0


def test_the_deploy_api_runs_the_reaper_while_it_serves(kube, tmp_path, monkeypatch):
    """The composition root starts it with the Kubernetes orchestrator (from the
    ``ZEXEC_K8S_*`` settings and a kubeconfig) and the app's shutdown stops it."""
    from fastapi.testclient import TestClient

    from zexec.adapters.auth_static import StaticAuthenticator
    from zexec.apps.deploy_api.container import build_app_from_settings
    from zexec.settings import AuthSettings, BrokerSettings, DeploySettings

    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
        f"clusters: [{{name: t, cluster: {{server: '{kube[1].configuration.host}'}}}}]\n"
        "users: [{name: t, user: {token: t}}]\n"
        "contexts: [{name: t, context: {cluster: t, user: t}}]\n")
    # The client reads $KUBECONFIG once, at import: point its default there instead.
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION",
                        str(config))
    # Loading it sets the client's process-wide default configuration: undone afterwards.
    monkeypatch.setattr(client.Configuration, "_default", client.Configuration._default)
    monkeypatch.setenv("ZEXEC_K8S_NAMESPACE_TTL", "3600")
    app = build_app_from_settings(
        DeploySettings(orchestrator="kubernetes"), AuthSettings(),
        BrokerSettings(server_secret=SECRET.decode()), authenticator=StaticAuthenticator({}))
    orch = app.state.orchestrator
    assert orch.reaper is not None and orch.reaper.ttl == 3600
    with TestClient(app) as http:
        assert http.get("/rexec/healthz").status_code == 200
        assert orch.reaper is not None
    assert orch.reaper is None  # the lifespan's closer stopped it


def test_the_chart_deletes_idle_namespaces_after_a_day_unless_turned_off():
    from chart_support import ensure_tools
    from test_helm_chart_defaults import k8s_settings, refused, render_docs

    ensure_tools()
    assert k8s_settings(render_docs()).namespace_ttl == 86400
    never = render_docs(sets=["deployApi.kubernetes.namespaceTtlSeconds=0"])
    assert k8s_settings(never).namespace_ttl == 0  # 0 = never: no reaper is started
    refused(["deployApi.kubernetes.namespaceTtlSeconds=-1"], "namespaceTtlSeconds")
