"""The Deploy API's rights inside a user namespace come from a RoleBinding it makes
there right after the namespace (adapters/orchestrator_k8s/access.py), against kmock."""

from __future__ import annotations

import kmock
import kubernetes_validate
import pytest
from kmock_support import K8S_SETTINGS, bare_plugin_manager
from kubernetes.client.exceptions import ApiException
from orch_support import SECRET

from zexec.adapters.orchestrator_k8s import KubernetesOrchestrator
from zexec.adapters.orchestrator_k8s.access import until_permitted
from zexec.core.envspec import parse_env_spec
from zexec.core.errors import ConfigurationError
from zexec.core.model import UserIdentity

pytest_plugins = ["k8s_fixtures"]

SIX = parse_env_spec(["python==3.11", "six"])
ROLE = "zexec-zexec-deploy-api-user"
BOUND = K8S_SETTINGS.model_copy(
    update={"user_role": ROLE, "service_account": "zexec:zexec-deploy-api"}
)
RB = kmock.resource("rbac.authorization.k8s.io", "v1", "rolebindings")


def orchestrator(kube, settings=BOUND) -> KubernetesOrchestrator:
    return KubernetesOrchestrator(kube[1], settings, SECRET, bare_plugin_manager())


def binding(emu, ns):
    key = (RB, ns, "zexec-deploy-api")
    if key not in emu.objects or emu.objects[key].deleted:
        return None
    return emu.objects[key].raw


def test_the_role_binding_comes_right_after_the_namespace(kube):
    emu, _ = kube
    orchestrator(kube).ensure(UserIdentity("rb-carol"), SIX)
    ns = "zexec-u-rb-carol"
    rb = binding(emu, ns)
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                             "name": ROLE}
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "zexec-deploy-api",
                               "namespace": "zexec"}]
    kubernetes_validate.validate(rb, "1.31.0", strict=True)
    # Nothing inside the namespace before the binding that permits it.
    posts = [r.resource.plural for r in emu if r.method == kmock.method.POST and r.namespace == ns]
    assert posts[0] == "rolebindings" and set(posts[1:]) >= {"networkpolicies", "jobs"}


def test_a_namespace_from_before_gets_its_binding_at_the_next_spawn(kube):
    emu, _ = kube
    user = UserIdentity("rb-dave")
    orchestrator(kube, K8S_SETTINGS).ensure(user, SIX)  # no user_role: no binding
    ns = "zexec-u-rb-dave"
    assert binding(emu, ns) is None
    orchestrator(kube).ensure(user, parse_env_spec(["python==3.11", "numpy"]), force=True)
    assert binding(emu, ns)["roleRef"]["name"] == ROLE
    orchestrator(kube).ensure(user, SIX, force=True)  # already there: kept (409)
    assert binding(emu, ns)["roleRef"]["name"] == ROLE


def test_a_bad_service_account_is_a_configuration_error(kube):
    with pytest.raises(ConfigurationError, match="namespace:name"):
        orchestrator(kube, BOUND.model_copy(update={"service_account": "zexec-deploy-api"}))


def test_forbidden_is_retried_until_the_binding_takes_effect():
    calls, slept = [], []

    def call():
        calls.append(1)
        if len(calls) < 3:
            raise ApiException(status=403, reason="Forbidden")
        return "done"

    assert until_permitted(call, sleep=slept.append) == "done"
    assert len(calls) == 3 and len(slept) == 2

    now = [0.0]

    def never():
        raise ApiException(status=403, reason="Forbidden")

    def tick(s):
        now[0] += s

    with pytest.raises(ApiException):
        until_permitted(never, timeout=1.0, sleep=tick, clock=lambda: now[0])
    with pytest.raises(ApiException):  # other errors are not retried
        until_permitted(lambda: (_ for _ in ()).throw(ApiException(status=500)))


def test_quota_and_limit_range_come_before_any_pod_and_follow_the_settings(kube):
    emu, _ = kube
    guarded = BOUND.model_copy(update={"resource_quota": "pods=4,limits.memory=8Gi",
                                       "limit_range_max": "cpu=2,memory=4Gi"})
    user = UserIdentity("rb-erin")
    orchestrator(kube, guarded).ensure(user, SIX)
    ns = "zexec-u-rb-erin"
    rq = emu.objects[(kmock.resource("", "v1", "resourcequotas"), ns, "zexec-server")].raw
    lr = emu.objects[(kmock.resource("", "v1", "limitranges"), ns, "zexec-server")].raw
    assert rq["spec"] == {"hard": {"pods": "4", "limits.memory": "8Gi"}}
    assert lr["spec"] == {"limits": [{"type": "Container", "max": {"cpu": "2", "memory": "4Gi"}}]}
    for doc in (rq, lr):
        kubernetes_validate.validate(doc, "1.31.0", strict=True)
    posts = [r.resource.plural for r in emu if r.method == kmock.method.POST and r.namespace == ns]
    assert posts.index("resourcequotas") < posts.index("jobs")
    assert posts.index("limitranges") < posts.index("jobs")
    # A later spawn brings them to the current settings.
    bigger = guarded.model_copy(update={"resource_quota": "pods=6,limits.memory=16Gi"})
    orchestrator(kube, bigger).ensure(user, parse_env_spec(["python==3.11", "numpy"]), force=True)
    rq = emu.objects[(kmock.resource("", "v1", "resourcequotas"), ns, "zexec-server")].raw
    assert rq["spec"]["hard"] == {"pods": "6", "limits.memory": "16Gi"}


def test_no_quota_settings_no_quota(kube):
    emu, _ = kube
    orchestrator(kube).ensure(UserIdentity("rb-fay"), SIX)
    key = (kmock.resource("", "v1", "resourcequotas"), "zexec-u-rb-fay", "zexec-server")
    assert key not in emu.objects


def test_pull_secrets_are_copied_into_the_namespace_and_named_by_the_pod(kube, tmp_path):
    import base64
    import json

    config = json.dumps({"auths": {"registry.example.org": {"auth": "eDp5"}}}).encode()
    (tmp_path / "registry-example-org").mkdir()
    (tmp_path / "registry-example-org" / ".dockerconfigjson").write_bytes(config)
    emu, _ = kube
    settings = BOUND.model_copy(update={"pull_secrets_dir": str(tmp_path)})
    orchestrator(kube, settings).ensure(UserIdentity("rb-gil"), SIX)
    ns = "zexec-u-rb-gil"
    secret = emu.objects[(kmock.resource("", "v1", "secrets"), ns, "registry-example-org")].raw
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert base64.b64decode(secret["data"][".dockerconfigjson"]) == config
    kubernetes_validate.validate(secret, "1.31.0", strict=True)
    jobs = [o.raw for (res, n, _), o in emu.objects.items()
            if res.plural == "jobs" and n == ns and not o.deleted]
    pod_spec = jobs[0]["spec"]["template"]["spec"]
    assert pod_spec["imagePullSecrets"] == [{"name": "registry-example-org"}]
    posts = [r.resource.plural for r in emu if r.method == kmock.method.POST and r.namespace == ns]
    assert posts.index("secrets") < posts.index("jobs")


def test_reading_a_server_in_a_namespace_without_binding_binds_it_first(kube, monkeypatch):
    """After an upgrade to the per-user role, namespaces made before have no RoleBinding:
    the first read that is forbidden makes it, then reads again."""
    emu, _ = kube
    user = UserIdentity("rb-hal")
    orchestrator(kube, K8S_SETTINGS).ensure(user, SIX)  # made without a binding
    ns = "zexec-u-rb-hal"
    assert binding(emu, ns) is None
    orch = orchestrator(kube)
    real = orch.batch.read_namespaced_job
    calls = []

    def forbidden_until_bound(*args, **kwargs):
        calls.append(1)
        if binding(emu, ns) is None:
            raise ApiException(status=403, reason="Forbidden")
        return real(*args, **kwargs)

    monkeypatch.setattr(orch.batch, "read_namespaced_job", forbidden_until_bound)
    assert orch.status("rb-hal").phase == "pending"
    assert binding(emu, ns)["roleRef"]["name"] == ROLE
    assert len(calls) == 2
