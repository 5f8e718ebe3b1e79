"""The warm pool on the kmock emulator (with resourceVersion preconditions, as the API
server has them): top-up, adoption by a spawn, the claim race between two Deploy API
replicas, the pool pods' binding and its refusals, status and terminate of an adopted
server, and the Deploy API's binding route over the real orchestrator."""

from __future__ import annotations

import base64
import threading

import pytest
from fastapi.testclient import TestClient
from kmock_support import (
    K8S_SETTINGS,
    VersionedEmulator,
    bare_plugin_manager,
    running_emulator,
    server_pod,
)
from kubernetes import client
from orch_support import SECRET, wait_for

from zexec.adapters.auth_static import StaticAuthenticator
from zexec.adapters.orchestrator_k8s import KubernetesOrchestrator
from zexec.adapters.orchestrator_k8s import pool_rules as rules
from zexec.adapters.orchestrator_k8s.pool import pool_spec
from zexec.apps.deploy_api import create_app
from zexec.core.envspec import parse_env_spec
from zexec.core.model import UserIdentity
from zexec.core.protocol import server_credential
from zexec.plugins import hookimpl
from zexec.settings import DeploySettings

POOL = K8S_SETTINGS.model_copy(update={
    "pool_size": 1, "pool_namespace": "zexec-pool",
    "pool_deploy_url": "http://zexec-deploy-api.zexec.svc:8000/rexec"})
DEFAULT = pool_spec(POOL)
NS = "zexec-pool"


@pytest.fixture
def vkube():
    """A fresh versioned emulator per test: the pool namespace starts empty."""
    with running_emulator(VersionedEmulator) as pair:
        yield pair


def orch(api, settings=POOL, pm=None) -> KubernetesOrchestrator:
    return KubernetesOrchestrator(api, settings, SECRET, pm or bare_plugin_manager(),
                                  idle_timeout=600)


def pool_pods(api) -> list[dict]:
    core = client.CoreV1Api(api)
    return [p.to_dict() for p in core.list_namespaced_pod(NS).items]


def run(api, name: str, ready: bool = False) -> None:
    """What a kubelet would write: the pod runs (and its server is registered: Ready)."""
    status = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False",
         "lastTransitionTime": "2024-05-01T10:00:09Z"}]}
    client.CoreV1Api(api).patch_namespaced_pod_status(name, NS, {"status": status})


def waiting_pod(o: KubernetesOrchestrator, api) -> str:
    """Top up, run the pod, and let its server announce itself (its first bind)."""
    made, _ = o.pool.sweep()
    (name,) = made
    run(api, name)
    assert o.pool.bind(name, rules.pool_key(SECRET, name)) is None
    return name


def test_top_up_creates_a_pool_pod_without_user_or_credential(vkube):
    _, api = vkube
    o = orch(api)
    made, dropped = o.pool.sweep()
    assert len(made) == 1 and dropped == []
    assert o.pool.sweep() == ([], [])  # size 1: nothing more
    pod = client.CoreV1Api(api).read_namespaced_pod(made[0], NS).to_dict()
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert "ZEXEC_SERVER_USER_ID" not in env and "ZEXEC_SERVER_CREDENTIAL" not in env
    assert env["ZEXEC_SERVER_POOL_POD"]["value"] == made[0]
    assert env["ZEXEC_SERVER_POOL_URL"]["value"] == POOL.pool_deploy_url
    assert env["ZEXEC_SERVER_POOL_KEY"]["value_from"]["secret_key_ref"]["name"] == made[0]
    secret = client.CoreV1Api(api).read_namespaced_secret(made[0], NS)
    assert base64.b64decode(secret.data["key"]).decode() == rules.pool_key(SECRET, made[0])
    assert pod["metadata"]["annotations"]["zexec.io/env-digest"] == DEFAULT.digest


def test_a_spawn_adopts_the_waiting_pod_and_its_server_gets_the_user(vkube):
    _, api = vkube
    o = orch(api)
    name = waiting_pod(o, api)
    st = o.ensure(UserIdentity("alice"), DEFAULT)
    assert st.phase == "pending"
    ann = client.CoreV1Api(api).read_namespace("zexec-u-alice").metadata.annotations
    assert ann["zexec.io/pod"] == f"{NS}/{name}"
    assert o.status("alice").phase == "starting"  # claimed, its server not registered yet
    key = rules.pool_key(SECRET, name)
    with pytest.raises(PermissionError, match="not a bound"):
        o.pool.registered(name, key)  # before its binding: nothing to say yet
    assert o.pool.bind(name, key) == ("alice", server_credential(SECRET, "alice"))
    assert o.status("alice").phase == "starting"
    # Its server says it registered with the broker: ready now, before the probe sees it.
    with pytest.raises(PermissionError, match="wrong key"):
        o.pool.registered(name, "0" * 64)
    o.pool.registered(name, key)
    assert o.status("alice").phase == "ready"
    run(api, name, ready=True)
    assert o.status("alice").phase == "ready"
    pod = client.CoreV1Api(api).read_namespaced_pod(name, NS).metadata
    assert pod.labels["zexec.io/user"] == "alice" and pod.annotations["zexec.io/user-id"] == "alice"
    # Never a second binding, whoever asks.
    with pytest.raises(PermissionError, match="already"):
        o.pool.bind(name, key)
    # The pool is topped up; the next user gets another pod, never alice's.
    made, _ = o.pool.sweep()
    assert len(made) == 1 and made[0] != name
    run(api, made[0])
    assert o.pool.bind(made[0], rules.pool_key(SECRET, made[0])) is None
    o.ensure(UserIdentity("bob"), DEFAULT)
    assert client.CoreV1Api(api).read_namespace("zexec-u-bob").metadata.annotations[
        "zexec.io/pod"] == f"{NS}/{made[0]}"
    assert o.pool.bind(made[0], rules.pool_key(SECRET, made[0])) == \
        ("bob", server_credential(SECRET, "bob"))
    # terminate removes the adopted pod (it lives in the pool's namespace) and its key.
    assert o.terminate("alice")
    names = {p["metadata"]["name"] for p in pool_pods(api)}
    assert name not in names and made[0] in names


def test_bind_refuses_wrong_keys_and_unknown_pods(vkube):
    _, api = vkube
    o = orch(api)
    name = waiting_pod(o, api)
    other = o.pool._create_one()
    with pytest.raises(PermissionError, match="wrong key"):
        o.pool.bind(name, "0" * 64)
    with pytest.raises(PermissionError, match="wrong key"):  # another pod's key
        o.pool.bind(name, rules.pool_key(SECRET, other))
    with pytest.raises(PermissionError, match="no such pool pod"):
        o.pool.bind("zexec-pool-nothere", rules.pool_key(SECRET, "zexec-pool-nothere"))
    # A user namespace's pod is no pool pod, even with a valid key for its name.
    o.ensure(UserIdentity("carol"), parse_env_spec(["six", "python==3.11"]))
    own = client.CoreV1Api(api).read_namespace("zexec-u-carol").metadata.annotations[
        "zexec.io/pod"]
    with pytest.raises(PermissionError):
        o.pool.bind(own, rules.pool_key(SECRET, own))


def test_two_replicas_claiming_one_pod_adopt_it_once(vkube):
    _, api = vkube
    a, b = orch(api), orch(api)
    name = waiting_pod(a, api)
    # Both replicas listed the pool before either claimed: the API server's
    # resourceVersion check lets exactly one claim through.
    snapshot = a.pool._list()
    a.pool._list = b.pool._list = lambda: snapshot
    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def spawn(o, user):
        barrier.wait(10)
        results[user] = o.pool.adopt(UserIdentity(user), DEFAULT, f"zexec-u-{user}", user)

    client.CoreV1Api(api).create_namespace({"metadata": {"name": "zexec-u-dave"}})
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "zexec-u-erin"}})
    threads = [threading.Thread(target=spawn, args=(a, "dave")),
               threading.Thread(target=spawn, args=(b, "erin"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(map(str, results.values())) == sorted(["None", f"{NS}/{name}"])
    (winner,) = [u for u, r in results.items() if r]
    assert a.pool.bind(name, rules.pool_key(SECRET, name))[0] == winner


def test_no_adoption_for_another_environment_force_or_pod_overrides(vkube):
    _, api = vkube
    o = orch(api)
    name = waiting_pod(o, api)
    o.ensure(UserIdentity("frank"), parse_env_spec(["six", "python==3.11"]))
    assert "/" not in client.CoreV1Api(api).read_namespace(
        "zexec-u-frank").metadata.annotations["zexec.io/pod"]

    class Gpu:
        @hookimpl
        def zexec_server_pod_overrides(self, env, user):
            return {"nodeSelector": {"gpu": "yes"}}

    with_overrides = orch(api, pm=bare_plugin_manager(Gpu()))
    with_overrides.ensure(UserIdentity("gina"), DEFAULT)
    assert "/" not in client.CoreV1Api(api).read_namespace(
        "zexec-u-gina").metadata.annotations["zexec.io/pod"]
    assert rules.is_spare(client.CoreV1Api(api).read_namespaced_pod(name, NS).to_dict())


def test_the_sweep_drops_excess_spares_and_orphaned_adopted_pods(vkube):
    _, api = vkube
    now = [1000.0]
    o = KubernetesOrchestrator(api, POOL, SECRET, bare_plugin_manager(), clock=lambda: now[0])
    first = waiting_pod(o, api)
    o.pool._create_one()  # another replica's overshoot
    _, dropped = o.pool.sweep()
    assert len(dropped) == 1 and first not in dropped  # the newest spare goes
    o.ensure(UserIdentity("hank"), DEFAULT)
    o.pool.bind(first, rules.pool_key(SECRET, first))
    client.CoreV1Api(api).delete_namespace("zexec-u-hank")  # e.g. the reaper's
    now[0] += 120  # past the claim's grace
    _, dropped = o.pool.sweep()
    assert first in dropped


def test_the_deploy_api_binding_route(vkube):
    _, api = vkube
    o = orch(api)
    name = waiting_pod(o, api)
    app = create_app(DeploySettings(orchestrator="kubernetes"), o,
                     StaticAuthenticator({"tok": {"sub": "ivan"}}))
    key = rules.pool_key(SECRET, name)
    with TestClient(app) as http:
        url = "/rexec/pool/bind"
        assert http.post(url, json={"pod": name, "wait": 0},
                         headers={"Authorization": f"Bearer {key}"}).status_code == 204
        assert http.post(url, json={"pod": name, "wait": 0},
                         headers={"Authorization": "Bearer nope"}).status_code == 403
        assert http.post(url, json={"wait": 0},
                         headers={"Authorization": f"Bearer {key}"}).status_code == 422
        # A spawn adopts the pod while its request waits: the answer is the binding.
        timer = threading.Timer(0.3, o.ensure, (UserIdentity("ivan"), DEFAULT))
        timer.start()
        got = http.post(url, json={"pod": name, "wait": 20},
                        headers={"Authorization": f"Bearer {key}"})
        timer.join()
        assert got.status_code == 200
        assert got.json() == {"user_id": "ivan",
                              "credential": server_credential(SECRET, "ivan")}
        again = http.post(url, json={"pod": name, "wait": 0},
                          headers={"Authorization": f"Bearer {key}"})
        assert again.status_code == 403 and "already" in again.json()["detail"]
        said = "/rexec/pool/registered"
        assert http.post(said, json={"pod": name},
                         headers={"Authorization": "Bearer nope"}).status_code == 403
        assert o.status("ivan").phase == "starting"
        assert http.post(said, json={"pod": name},
                         headers={"Authorization": f"Bearer {key}"}).status_code == 204
        assert o.status("ivan").phase == "ready"


def test_every_pool_request_is_allowed_by_the_charts_pool_role(vkube):
    """The chart's Role in the pool namespace (as its README documents it; the chart
    tests hold the rendered Role to that table) permits every request the pool makes
    there, over a whole pool lifecycle."""
    from chart_support import CHART, checks

    emu, api = vkube
    o = orch(api)
    name = waiting_pod(o, api)
    o.ensure(UserIdentity("jane"), DEFAULT)
    o.pool.bind(name, rules.pool_key(SECRET, name))
    o.pool._create_one()
    o.pool.sweep()  # drops the surplus spare
    o.status("jane")
    o.terminate("jane")
    allowed = [{"apiGroups": [g], "resources": [r], "verbs": [v]} for g, r, v in
               checks.documented_cluster_rules(CHART / "README.md", "poolrole-rules")]
    verbs = {"POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}
    seen = set()
    for req in emu:
        if req.namespace != NS or req.resource is None:
            continue
        if req.resource.plural == "pods" and req.subresource == "status":
            continue  # the kubelet's write in this test (run()), not the Deploy API's
        method = str(req.method.value if hasattr(req.method, "value") else req.method)
        verb = verbs.get(method.upper()) or ("get" if req.name else "list")
        resource = req.resource.plural + (f"/{req.subresource}" if req.subresource else "")
        seen.add((verb, resource))
        assert checks.rbac_allows(allowed, verb, req.resource.group, resource), (verb, resource)
    assert {("create", "pods"), ("list", "pods"), ("get", "pods"), ("patch", "pods"),
            ("delete", "pods"), ("create", "secrets"), ("delete", "secrets")} <= seen


def test_an_adopted_server_exits_idle_is_readopted_and_force_replaced(vkube):
    _, api = vkube
    o = orch(api)
    core = client.CoreV1Api(api)
    first = waiting_pod(o, api)
    user = UserIdentity("kim")
    o.ensure(user, DEFAULT)
    o.pool.bind(first, rules.pool_key(SECRET, first))
    # Idle exit: the adopted server is terminated (idle), as a created one.
    core.patch_namespaced_pod_status(first, NS, {"status": {"phase": "Succeeded"}})
    st = o.status("kim")
    assert (st.phase, st.reason) == ("terminated", "idle")
    # The next spawn replaces it in place: it adopts the pool's next spare, and the
    # ended pod is deleted.
    (second,) = o.pool.sweep()[0]
    run(api, second)
    o.pool.bind(second, rules.pool_key(SECRET, second))
    o.ensure(user, DEFAULT)
    assert core.read_namespace("zexec-u-kim").metadata.annotations["zexec.io/pod"] == \
        f"{NS}/{second}"
    assert first not in {p["metadata"]["name"] for p in pool_pods(api)}
    assert o.pool.bind(second, rules.pool_key(SECRET, second))[0] == "kim"
    run(api, second, ready=True)
    assert o.status("kim").phase == "ready"
    # force to another environment: built beside the adopted server, in kim's own
    # namespace; once ready it is promoted and the adopted pod is deleted.
    six = parse_env_spec(["six", "python==3.11"])
    o.ensure(user, six, force=True)
    nxt = core.read_namespace("zexec-u-kim").metadata.annotations["zexec.io/next-pod"]
    assert "/" not in nxt
    # (a Job in kim's namespace: its pod made by the test Job controller)
    core.patch_namespaced_pod_status(server_pod(api, "zexec-u-kim", "zexec.io/next-pod"),
                                     "zexec-u-kim", {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})
    st = o.status("kim")
    assert st.phase == "ready" and st.env == six
    assert core.read_namespace("zexec-u-kim").metadata.annotations["zexec.io/pod"] == nxt
    assert second not in {p["metadata"]["name"] for p in pool_pods(api)}


def test_a_claim_wakes_the_binding_request_waiting_in_this_process(vkube):
    """A pod's binding request waits on this replica between two looks at the pod; a
    claim made by this replica ends that wait (the 3600 s wait cannot pass in this
    test's bound: only the claim can end it)."""
    _, api = vkube
    o = orch(api)
    name = waiting_pod(o, api)
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (o.pool.wait(name, 3600), done.set()),
                              daemon=True)
    waiter.start()
    wait_for(lambda: name in o.pool._waiting, timeout=30, what="the waiting request")
    o.ensure(UserIdentity("lee"), DEFAULT)
    assert done.wait(60)
    assert name not in o.pool._waiting
    assert o.pool.bind(name, rules.pool_key(SECRET, name))[0] == "lee"
