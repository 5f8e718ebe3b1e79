"""KubernetesOrchestrator with the real client against the kmock API emulator: the
objects it creates, phase mapping from pod status we set, replace and terminate."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import kmock
import kubernetes_validate
import pytest
from kmock_support import K8S_SETTINGS, bare_plugin_manager, server_pod
from kubernetes import client
from orch_support import SECRET

from zexec.adapters.orchestrator_k8s import KubernetesOrchestrator
from zexec.core.envspec import parse_env_spec
from zexec.core.errors import EnvironmentConflict, OrchestratorError
from zexec.core.model import Resources, UserIdentity
from zexec.core.protocol import server_credential
from zexec.plugins import hookimpl

pytest_plugins = ["k8s_fixtures"]

SIX = parse_env_spec(["python==3.11", "six"])
NUMPY = parse_env_spec(["python==3.12", "numpy>=1.26", "six"])
NS_RES = kmock.resource("", "v1", "namespaces")


def obj(emu, plural: str, ns: str | None, name: str, group: str = "") -> dict | None:
    key = (kmock.resource(group, "v1", plural), ns, name)
    if key not in emu.objects or emu.objects[key].deleted:
        return None
    return emu.objects[key].raw


def in_namespace(emu, ns: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for (res, namespace, name), o in emu.objects.items():
        if namespace == ns and not o.deleted:
            out.setdefault(res.plural, []).append(name)
    return out


def ann(kube, ns: str) -> dict[str, str]:
    return client.CoreV1Api(kube[1]).read_namespace(ns).metadata.annotations


def set_pod_status(kube, ns: str, status: dict) -> str:
    """Write what the kubelet would report on the current pod of the user's server Job."""
    core = client.CoreV1Api(kube[1])
    pod = server_pod(kube[1], ns)
    core.patch_namespaced_pod_status(pod, ns, {"status": status}, _preload_content=False)
    return pod


def test_ensure_creates_the_locked_down_objects(kube, k8s_orch):
    emu, _ = kube
    st = k8s_orch.ensure(UserIdentity("alice"), SIX)
    assert (st.phase, st.env) == ("pending", SIX)
    ns = "zexec-u-alice"
    nsobj = obj(emu, "namespaces", None, ns)
    assert nsobj["metadata"]["labels"]["zexec.io/user"] == "alice"
    assert nsobj["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert json.loads(nsobj["metadata"]["annotations"]["zexec.io/env"])["digest"] == SIX.digest
    kinds = in_namespace(emu, ns)
    assert kinds.keys() == {"networkpolicies", "secrets", "configmaps", "jobs"}
    (job_name,) = kinds["jobs"]
    assert nsobj["metadata"]["annotations"]["zexec.io/pod"] == job_name
    job = obj(emu, "jobs", ns, job_name, "batch")
    # A Job per server: disruptions replaced, a crash or idle exit final (see jobs.py).
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["completions"] == 1
    assert "activeDeadlineSeconds" not in job["spec"]
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert job["spec"]["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Ignore",
         "onExitCodes": {"containerName": "server", "operator": "In", "values": [143]}},
        {"action": "FailJob",
         "onExitCodes": {"containerName": "server", "operator": "NotIn", "values": [0, 143]}}]
    template = job["spec"]["template"]
    assert template["metadata"]["annotations"][
        "cluster-autoscaler.kubernetes.io/safe-to-evict"] == "true"
    assert template["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    # The cluster's job controller makes the pod from the template.
    pod = obj(emu, "pods", ns, server_pod(kube[1], ns))
    assert pod["metadata"]["ownerReferences"][0]["controller"] is True
    assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == job_name
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["metadata"]["labels"]["zexec.io/env-digest"] == SIX.digest[:16]
    assert pod["spec"]["containers"][0]["image"] == "zexec/server:py3.11"
    cm = obj(emu, "configmaps", ns, kinds["configmaps"][0])
    assert cm["data"]["requirements.txt"] == "six\n"
    secret = obj(emu, "secrets", ns, "zexec-server")
    assert base64.b64decode(secret["data"]["credential"]).decode() == server_credential(
        SECRET, "alice"
    )
    policy = obj(emu, "networkpolicies", ns, "zexec-server", "networking.k8s.io")
    assert policy["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 5560}]
    # What reached the API server is schema-valid, and the Job came after its policy.
    for doc in (nsobj, job, cm, secret, policy):
        kubernetes_validate.validate(doc, "1.31.0", strict=True)
    posts = [r.resource.plural for r in emu if r.method == kmock.method.POST and r.namespace == ns]
    assert posts.index("networkpolicies") < posts.index("jobs")


def test_phases_follow_the_pod_status(kube, k8s_orch):
    emu, _ = kube
    user = UserIdentity("bob")
    k8s_orch.ensure(user, SIX)
    ns = "zexec-u-bob"
    assert k8s_orch.status("bob").phase == "pending"
    running = {"running": {"startedAt": "2024-05-01T10:00:00Z"}}
    done = {"terminated": {"exitCode": 0}}
    emu[kmock.subresource("log")] << "Collecting six\nInstalling collected packages: six\n"
    set_pod_status(kube, ns, {"phase": "Pending", "initContainerStatuses": [
        {"name": "venv", "state": done}, {"name": "install", "state": running}]})  # fmt: skip
    st = k8s_orch.status("bob")
    assert st.phase == "installing" and st.log_tail[-1].startswith("Installing collected")
    set_pod_status(kube, ns, {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-01T10:00:09Z"}]})  # fmt: skip
    st = k8s_orch.status("bob")
    assert st.phase == "ready" and st.since == 1714557609.0
    assert k8s_orch.ensure(user, SIX).phase == "ready"  # idempotent
    set_pod_status(kube, ns, {"phase": "Failed", "containerStatuses": [
        {"name": "server", "state": {"terminated": {"exitCode": 2}}}]})  # fmt: skip
    st = k8s_orch.status("bob")
    assert st.phase == "failed" and "exit code 2" in st.reason and st.log_tail
    # The job controller applies FailJob (a non-zero exit of the server): still failed.
    server_pod(kube[1], ns)
    job = obj(emu, "jobs", ns, ann(kube, ns)["zexec.io/pod"], "batch")
    assert [c["reason"] for c in job["status"]["conditions"]] == ["PodFailurePolicy"] * 2
    st = k8s_orch.status("bob")
    assert st.phase == "failed" and "exit code 2" in st.reason and st.log_tail
    # A failed server is no conflict: another environment replaces it without force.
    assert k8s_orch.ensure(user, NUMPY).env == NUMPY
    set_pod_status(kube, ns, {"phase": "Succeeded"})  # the idle exit
    assert (k8s_orch.status("bob").phase, k8s_orch.status("bob").reason) == ("terminated", "idle")
    server_pod(kube[1], ns)  # the Job is Complete: no new pod, the server ended
    assert (k8s_orch.status("bob").phase, k8s_orch.status("bob").reason) == ("terminated", "idle")
    assert k8s_orch.ensure(user, SIX).env == SIX


def test_force_replaces_pod_and_config_map_in_place(kube, k8s_orch):
    emu, _ = kube
    user = UserIdentity("carol")
    k8s_orch.ensure(user, SIX)
    ns = "zexec-u-carol"
    (old_job,) = in_namespace(emu, ns)["jobs"]
    old_pod = server_pod(kube[1], ns)
    st = k8s_orch.ensure(user, NUMPY, force=True)
    assert (st.phase, st.env) == ("pending", NUMPY)
    # The old Job is deleted with propagation Background: its pods go with it.
    (delete,) = [r for r in emu if r.method == kmock.method.DELETE and r.name == old_job]
    assert delete.params.get("propagationPolicy") == "Background"
    new_pod = server_pod(kube[1], ns)  # the garbage collector and job controller act
    kinds = in_namespace(emu, ns)
    (new_job,) = kinds["jobs"]
    assert new_job != old_job and kinds["pods"] == [new_pod] and new_pod != old_pod
    assert kinds["configmaps"] == [f"zexec-env-{NUMPY.digest[:16]}"]
    assert obj(emu, "pods", ns, new_pod)["spec"]["containers"][0]["image"] == "zexec/server:py3.12"
    nsobj = obj(emu, "namespaces", None, ns)
    assert nsobj["metadata"]["labels"]["zexec.io/env-digest"] == NUMPY.digest[:16]
    assert k8s_orch.status("carol").env == NUMPY


def test_terminate_removes_everything(kube, k8s_orch):
    emu, _ = kube
    k8s_orch.ensure(UserIdentity("dave"), SIX)
    assert in_namespace(emu, "zexec-u-dave")
    assert k8s_orch.terminate("dave") is True
    assert obj(emu, "namespaces", None, "zexec-u-dave") is None
    assert in_namespace(emu, "zexec-u-dave") == {}
    assert k8s_orch.terminate("dave") is False
    assert k8s_orch.status("dave") is None


def test_plugins_choose_the_image_and_override_the_pod(kube):
    emu, api = kube

    class SitePlugin:
        @hookimpl
        def zexec_server_image(self, env):
            return f"registry.site/zexec-gpu:{env.digest[:8]}" if "numpy" in str(env) else None

        @hookimpl
        def zexec_server_pod_overrides(self, env, user):
            if "gpu" not in user.groups:
                return None
            return {
                "nodeSelector": {"accelerator": "a100"},
                "containers": [{"name": "server", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
            }

    orch = KubernetesOrchestrator(api, K8S_SETTINGS, SECRET, bare_plugin_manager(SitePlugin()))
    orch.ensure(UserIdentity("erin", groups=("gpu",)), NUMPY)
    (job_name,) = in_namespace(emu, "zexec-u-erin")["jobs"]
    spec = obj(emu, "jobs", "zexec-u-erin", job_name, "batch")["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == f"registry.site/zexec-gpu:{NUMPY.digest[:8]}"
    assert spec["initContainers"][0]["image"] == spec["containers"][0]["image"]
    assert spec["nodeSelector"] == {"accelerator": "a100"}
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    orch.ensure(UserIdentity("frank"), SIX)
    (job_name,) = in_namespace(emu, "zexec-u-frank")["jobs"]
    spec = obj(emu, "jobs", "zexec-u-frank", job_name, "batch")["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == "zexec/server:py3.11" and "nodeSelector" not in spec


def test_list_and_foreign_namespaces(kube, k8s_orch):
    k8s_orch.ensure(UserIdentity("gina"), SIX)
    assert "gina" in {s.user_id for s in k8s_orch.list()}
    # A namespace with our name that is not this user's is never touched.
    client.CoreV1Api(kube[1]).create_namespace(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "zexec-u-hank"}}
    )
    assert k8s_orch.status("hank") is None and k8s_orch.terminate("hank") is False
    with pytest.raises(OrchestratorError, match="another user"):
        k8s_orch.ensure(UserIdentity("hank"), SIX)


def test_resources_shape_the_pod_and_are_another_server(kube, k8s_orch):
    emu, _ = kube
    user, ns = UserIdentity("ivy"), "zexec-u-ivy"
    asked = replace(SIX, resources=Resources(cpus=1.5, memory=2048, workers=3))
    k8s_orch.ensure(user, asked)
    pod_name = server_pod(kube[1], ns)
    server = obj(emu, "pods", ns, pod_name)["spec"]["containers"][0]
    assert server["resources"]["limits"]["cpu"] == server["resources"]["requests"]["cpu"] == "1500m"
    assert server["resources"]["limits"]["memory"] == "2048Mi"
    assert {"name": "ZEXEC_SERVER_WORKERS", "value": "3"} in server["env"]
    st = k8s_orch.status("ivy")  # read back from the namespace's annotation
    assert st.env == asked and st.resources == Resources(cpus=1.5, memory=2048, gpus=0, workers=3)
    # the same request is the same server; the same requirements without it are not
    assert k8s_orch.ensure(user, asked).env == asked
    with pytest.raises(EnvironmentConflict, match="requested site defaults"):
        k8s_orch.ensure(user, SIX)
    # the install config map is per requirements digest: the same one for both
    assert in_namespace(emu, ns)["configmaps"] == [f"zexec-env-{SIX.digest[:16]}"]
    k8s_orch.terminate("ivy")


def test_a_namespace_from_before_servers_were_jobs_is_read_and_replaced(kube, k8s_orch):
    """An upgrade finds namespaces whose annotation names a bare server pod: its status
    is read from that pod, and a replace deletes it (no Job of that name)."""
    emu, api = kube
    user = UserIdentity("ivan")
    k8s_orch.ensure(user, SIX)
    ns = "zexec-u-ivan"
    (job_name,) = in_namespace(emu, ns)["jobs"]
    client.BatchV1Api(api).delete_namespaced_job(job_name, ns, _preload_content=False)
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(ns, {"metadata": {
        "name": "zexec-server-old", "labels": {"app.kubernetes.io/managed-by": "zexec"}},
        "spec": {"containers": [{"name": "server", "image": "x"}]}}, _preload_content=False)
    core.patch_namespace(ns, {"metadata": {"annotations": {"zexec.io/pod": "zexec-server-old"}}})
    core.patch_namespaced_pod_status("zexec-server-old", ns, {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        _preload_content=False)
    assert k8s_orch.status("ivan").phase == "ready"
    k8s_orch.ensure(user, NUMPY, force=True)  # built beside the old one
    nxt = server_pod(api, ns, "zexec.io/next-pod")
    core.patch_namespaced_pod_status(nxt, ns, {"status": {
        "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        _preload_content=False)
    assert k8s_orch.status("ivan").phase == "ready"  # promoted: the old pod is deleted
    assert obj(emu, "pods", ns, "zexec-server-old") is None
    assert len(in_namespace(emu, ns)["jobs"]) == 1


class InMemoryServerRegistry:
    """The broker's registered servers, as a dict of user id -> heartbeat info."""

    def __init__(self) -> None:
        self.servers: dict[str, dict] = {}

    def server_info(self, user_id: str) -> dict | None:
        return self.servers.get(user_id)


def test_a_started_pod_is_ready_once_its_own_server_registered(kube):
    """Readiness from the broker (its SERVER answer) before the pod's Ready condition:
    only for the pod's own server (its name), not a stopping one, not another pod's."""
    registry = InMemoryServerRegistry()
    orch = KubernetesOrchestrator(kube[1], K8S_SETTINGS, SECRET, bare_plugin_manager(),
                                  idle_timeout=600, registry=registry)
    orch.ensure(UserIdentity("dan"), SIX)
    ns = "zexec-u-dan"
    running = {"running": {"startedAt": "2024-05-01T10:00:00Z"}}
    pod = set_pod_status(kube, ns, {"phase": "Running", "containerStatuses": [
        {"name": "server", "state": running, "ready": False}]})  # fmt: skip
    assert orch.status("dan").phase == "starting"  # nothing registered
    registry.servers["dan"] = {"name": "zexec-server-other-pod", "stopping": False}
    assert orch.status("dan").phase == "starting"  # another pod's server
    registry.servers["dan"] = {"name": pod, "stopping": True}
    assert orch.status("dan").phase == "starting"  # its own, but stopping
    registry.servers["dan"] = {"name": pod, "stopping": False}
    st = orch.status("dan")
    assert (st.phase, st.reason) == ("ready", "")
    # The pod sets the name its server sends: its own, from the downward API.
    spec = server_pod_spec(kube, ns, pod)
    (env,) = [e for e in spec["containers"][0]["env"] if e["name"] == "ZEXEC_SERVER_NAME"]
    assert env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Only a started pod: one still installing is not ready, whatever the broker says
    # (a registration under the pod's name can only be an impostor's then).
    set_pod_status(kube, ns, {"phase": "Pending", "initContainerStatuses": [
        {"name": "install", "state": running}]})  # fmt: skip
    assert orch.status("dan").phase == "installing"
    orch.terminate("dan")


def server_pod_spec(kube, ns: str, pod: str) -> dict:
    core = client.CoreV1Api(kube[1])
    return json.loads(core.read_namespaced_pod(pod, ns, _preload_content=False).data)["spec"]
