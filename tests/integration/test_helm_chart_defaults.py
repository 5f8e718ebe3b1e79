"""The chart installs as is (issue 15): sizing, package path, least privilege, safe
defaults, each asserted on the rendered objects, and every refusal fails the render
with a message naming the values to change.

Rendering is offline (pinned helm from scripts/k8s-tools.sh); defaults are rendered once.
"""

from __future__ import annotations

import pytest
from chart_support import (
    CHART,
    HelmError,
    container,
    deployment,
    ensure_tools,
    env_of,
    find,
    helm_template,
    one,
    render_docs,
)

EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def tools():
    return ensure_tools()


@pytest.fixture(scope="module")
def docs(tools) -> list[dict]:
    return render_docs()


def refused(sets: list[str], *message: str) -> str:
    """The render with ``sets`` fails, and its error says each of ``message``."""
    with pytest.raises(HelmError) as err:
        helm_template(sets=sets)
    for part in message:
        assert part in str(err.value), str(err.value)
    return str(err.value)


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


# --------------------------------------------------------------------------- broker sizing


def test_broker_limits_are_values_sized_for_the_default_memory_limit(docs):
    broker = container(deployment(docs, "broker"))
    env = env_of(broker, docs)
    for name in ("MAX_FRAME_BYTES", "MAX_QUEUED_BYTES", "MAX_PAYLOAD_BYTES",
                 "PREAUTH_BYTES", "PREAUTH_TOTAL_BYTES", "PREAUTH_TIMEOUT"):
        assert f"ZEXEC_BROKER_{name}" in env
    held = (max(int(env["ZEXEC_BROKER_MAX_PAYLOAD_BYTES"]),
                int(env["ZEXEC_BROKER_MAX_FRAME_BYTES"]))
            + int(env["ZEXEC_BROKER_PREAUTH_TOTAL_BYTES"])
            + int(env["ZEXEC_BROKER_MAX_QUEUED_BYTES"]) + (256 << 20))
    assert broker["resources"]["limits"]["memory"] == "3Gi"
    assert held <= 3 << 30


@pytest.mark.parametrize("sets", [
    ["broker.resources.limits.memory=1Gi"],
    ["broker.limits.maxQueuedBytes=2147483648"],
    ["broker.limits.maxFrameBytes=4294967296"],
])
def test_limits_that_cannot_fit_in_the_broker_memory_fail_the_render(tools, sets):
    refused(sets, "broker.resources.limits.memory", "cannot hold what broker.limits allow")


def test_smaller_limits_fit_a_smaller_broker(tools):
    docs = render_docs(sets=[
        "broker.resources.limits.memory=1700Mi",
        "broker.limits.maxPayloadBytes=1073741824",
        "broker.limits.maxFrameBytes=1073741824",
    ])
    assert container(deployment(docs, "broker"))["resources"]["limits"]["memory"] == "1700Mi"


def test_memory_limit_in_a_non_byte_unit_is_refused(tools):
    refused(["broker.resources.limits.memory=3000m"], "is not a memory quantity")


def test_priority_class_names(tools):
    docs = render_docs(sets=[
        "broker.priorityClassName=zexec-critical",
        "deployApi.priorityClassName=zexec-high",
        "epApi.priorityClassName=zexec-high",
    ])
    assert pod_spec(deployment(docs, "broker"))["priorityClassName"] == "zexec-critical"
    assert pod_spec(deployment(docs, "deploy-api"))["priorityClassName"] == "zexec-high"
    assert pod_spec(deployment(docs, "ep-api"))["priorityClassName"] == "zexec-high"


def test_no_priority_class_by_default(docs):
    for d in find(docs, "Deployment"):
        assert "priorityClassName" not in pod_spec(d)



# --------------------------------------------------------------------------- package path


def k8s_settings(docs: list[dict]):
    """The KubernetesSettings the Deploy API gets from the rendered chart."""
    from zexec.settings import KubernetesSettings

    denv = env_of(container(deployment(docs, "deploy-api")), docs)
    return KubernetesSettings(**{
        f: denv[f"ZEXEC_K8S_{f.upper()}"] for f in KubernetesSettings.model_fields
    })


def test_default_package_path_is_an_in_cluster_proxy_by_selector_and_port(docs):
    from zexec.adapters.orchestrator_k8s import manifests as m
    from zexec.core.envspec import parse_env_spec

    settings = k8s_settings(docs)
    assert settings.pip_index_url == "http://pypi-proxy.zexec-pypi.svc:3141/root/pypi/+simple/"
    policy = m.build_network_policy("zexec-u-a", settings, {})
    proxy = [r for r in policy["spec"]["egress"]
             if r["to"][0].get("namespaceSelector", {}).get("matchLabels", {})
             .get("kubernetes.io/metadata.name") == "zexec-pypi"]
    assert proxy == [{
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "zexec-pypi"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "pypi-proxy"}},
        }],
        "ports": [{"protocol": "TCP", "port": 3141}],
    }]
    assert all(r.get("ports") and r.get("to") for r in policy["spec"]["egress"])
    pod = m.build_pod("zexec-u-a", "p", "a", parse_env_spec(["python==3.11", "six"]), "img", settings, {})
    (install,) = pod["spec"]["initContainers"]
    env = {e["name"]: e.get("value") for e in install["env"]}
    assert settings.installer == "uv"  # the chart's default
    assert env["UV_INDEX_URL"] == settings.pip_index_url
    assert env["UV_INSECURE_HOST"] == "pypi-proxy.zexec-pypi.svc"


def test_site_mirror_example_reaches_its_cidr_on_https_only(tools):
    from zexec.adapters.orchestrator_k8s import manifests as m

    docs = render_docs(values=[CHART / "examples" / "site-images.yaml"])
    settings = k8s_settings(docs)
    assert settings.pip_index_url.startswith("https://")
    egress = m.build_network_policy("zexec-u-a", settings, {})["spec"]["egress"]
    cidr = [r for r in egress if "ipBlock" in r["to"][0]]
    assert cidr == [{"to": [{"ipBlock": {"cidr": "10.20.30.0/24"}}],
                     "ports": [{"protocol": "TCP", "port": 443}]}]
    assert settings.package_proxy_pod_labels == ""  # no proxy rule


def test_a_cidr_without_an_index_url_is_refused(tools):
    refused(["deployApi.kubernetes.extraEgressCidrs={10.0.0.0/8}",
             "deployApi.kubernetes.pipIndexUrl="],
            "extraEgressCidrs is set but deployApi.kubernetes.pipIndexUrl is empty")


def test_an_index_url_nothing_lets_pods_reach_is_refused(tools):
    refused(["deployApi.kubernetes.packageProxy.enabled=false"],
            "pipIndexUrl", "is unreachable from server pods")


def test_egress_cidrs_need_ports(tools):
    refused(["deployApi.kubernetes.extraEgressPorts=null"], "extraEgressPorts")


def test_user_pod_disk_is_bounded(docs):
    from zexec.adapters.orchestrator_k8s import manifests as m
    from zexec.core.envspec import parse_env_spec

    pod = m.build_pod("zexec-u-a", "p", "a", parse_env_spec(["python==3.11", "six"]), "img",
                      k8s_settings(docs), {})
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["venv"]["emptyDir"]["sizeLimit"] == "8Gi"
    assert volumes["tmp"]["emptyDir"]["sizeLimit"] == "2Gi"
    for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        assert c["resources"]["requests"]["ephemeral-storage"] == "1Gi"
        assert c["resources"]["limits"]["ephemeral-storage"] == "10Gi"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_volumes_larger_than_the_disk_limit_are_refused(tools):
    refused(["deployApi.kubernetes.serverStorage.limit=4Gi"],
            "venvSizeLimit (8Gi) + tmpSizeLimit (2Gi) exceed limit (4Gi)")


# --------------------------------------------------------------------------- RBAC


def test_rbac_without_the_admission_policy_is_refused(tools):
    refused(["deployApi.rbac.admissionPolicy.enabled=false"],
            "deployApi.rbac.create is true but deployApi.rbac.admissionPolicy.enabled is false")


def test_no_rbac_no_policy_renders(tools):
    docs = render_docs(sets=["deployApi.rbac.create=false",
                             "deployApi.rbac.admissionPolicy.enabled=false"])
    assert not find(docs, "ClusterRole") and not find(docs, "ValidatingAdmissionPolicy")
    denv = env_of(container(deployment(docs, "deploy-api")), docs)
    assert denv["ZEXEC_K8S_USER_ROLE"] == ""  # no RoleBinding to make


def test_cluster_scope_is_namespaces_and_binding_the_per_user_role_only(docs):
    top = one(docs, "ClusterRole", "zexec-zexec-deploy-api")
    resources = {r for rule in top["rules"] for r in rule["resources"]}
    assert resources == {"namespaces", "rolebindings", "clusterroles"}
    per_user = one(docs, "ClusterRole", "zexec-zexec-deploy-api-user")
    assert {r for rule in per_user["rules"] for r in rule["resources"]} >= {
        "jobs", "pods", "pods/log", "configmaps", "secrets"}
    # Bound cluster-wide: only the first.
    assert [b["roleRef"]["name"] for b in find(docs, "ClusterRoleBinding")] == [
        "zexec-zexec-deploy-api"]


# --------------------------------------------------------------------------- user namespaces


def test_user_namespaces_get_a_quota_and_limit_range_that_admit_two_servers(docs):
    from zexec.adapters.orchestrator_k8s import quota

    settings = k8s_settings(docs)
    rq = quota.build_resource_quota("zexec-u-a", settings.resource_quota, {})
    lr = quota.build_limit_range("zexec-u-a", settings.limit_range_max, {})
    # Three servers' worth: the running one, one built beside it, one terminating, each
    # at the most one may ask for (resourceLimits 2 cpus/4096 MiB, requested and
    # limited alike: 3 x 2 / 12288Mi), 3 x 2 cpu/4Gi limits, 3 x 1Gi/10Gi disk.
    assert rq["spec"]["hard"] == {
        "pods": "4", "requests.cpu": "6", "requests.memory": "12288Mi",
        "limits.cpu": "6", "limits.memory": "12Gi",
        "requests.ephemeral-storage": "3Gi", "limits.ephemeral-storage": "30Gi",
    }
    assert lr["spec"]["limits"][0]["max"] == {"cpu": "2", "memory": "4Gi",
                                              "ephemeral-storage": "10Gi"}


def test_quota_follows_the_server_size_and_takes_extra_entries(tools):
    docs = render_docs(sets=["deployApi.kubernetes.serverResources.limits.memory=16Gi",
                             "deployApi.kubernetes.resourceQuota.hard.requests\\.nvidia\\.com/gpu=2"])
    settings = k8s_settings(docs)
    assert "limits.memory=48Gi" in settings.resource_quota
    assert "requests.nvidia.com/gpu=2" in settings.resource_quota
    assert "memory=16Gi" in settings.limit_range_max
    off = k8s_settings(render_docs(sets=["deployApi.kubernetes.resourceQuota.enabled=false",
                                         "deployApi.kubernetes.limitRange.enabled=false"]))
    assert off.resource_quota == off.limit_range_max == ""


@pytest.mark.parametrize(("sets", "message"), [
    (["deployApi.kubernetes.resourceQuota.hard.limits\\.memory=4Gi"], "must hold two servers"),
    (["deployApi.kubernetes.resourceQuota.hard.pods=1"], "pods must be at least 2"),
    (["deployApi.kubernetes.limitRange.max.memory=1Gi"], "every server pod would be rejected"),
    (["deployApi.kubernetes.limitRange.max.ephemeral-storage=1Gi"],
     "every server pod would be rejected"),
])
def test_bounds_that_reject_the_servers_are_refused(tools, sets, message):
    refused(sets, message)


# --------------------------------------------------------------------------- resilience


def test_apis_run_two_replicas_spread_over_nodes_with_disruption_budgets(docs):
    api = deployment(docs, "deploy-api")
    assert api["spec"]["replicas"] == 2
    for component in ("deploy-api", "ep-api"):
        spread = pod_spec(deployment(docs, component))["topologySpreadConstraints"]
        assert spread == [{
            "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": deployment(docs, component)["spec"]["selector"]
                              ["matchLabels"]},
        }]
        pdb = one(docs, "PodDisruptionBudget", f"zexec-{component}")
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"] == deployment(docs, component)["spec"]["selector"]
    # One broker by design: no budget that would block every drain.
    assert len(find(docs, "PodDisruptionBudget")) == 2


def test_grace_periods_cover_the_longest_legitimate_request(docs):
    api = pod_spec(deployment(docs, "deploy-api"))
    denv = env_of(api["containers"][0], docs)
    assert api["terminationGracePeriodSeconds"] >= int(denv["ZEXEC_DEPLOY_LEGACY_SPAWN_WAIT"])
    broker = pod_spec(deployment(docs, "broker"))
    benv = env_of(broker["containers"][0], docs)
    assert broker["terminationGracePeriodSeconds"] > float(benv["ZEXEC_BROKER_DRAIN_TIMEOUT"])


def test_every_app_has_a_startup_probe_and_the_broker_an_application_liveness_check(docs):
    for component in ("broker", "deploy-api", "ep-api"):
        assert container(deployment(docs, component))["startupProbe"]
    live = container(deployment(docs, "broker"))["livenessProbe"]
    assert live["exec"]["command"][-1] == "zexec-control://127.0.0.1:5561"


def test_secrets_checksum_is_stable_across_renders_and_follows_the_values(tools):
    def checksum(sets=()):
        d = render_docs(sets=list(sets))
        return {c: deployment(d, c)["spec"]["template"]["metadata"]["annotations"]
                ["checksum/secrets"] for c in ("broker", "deploy-api")}

    first, second = checksum(), checksum()
    assert first == second  # random secret values do not restart pods at every sync
    assert checksum(["broker.serverSecret.existingSecret=mine"])["broker"] != first["broker"]


def test_images_by_digest(tools):
    digest = "sha256:" + "a" * 64
    docs = render_docs(sets=[f"image.digest={digest}"])
    for component in ("broker", "deploy-api", "ep-api"):
        assert container(deployment(docs, component))["image"] == f"zexec/apps@{digest}"
    refused(["image.digest=latest"], "digest")


def test_ingress_tls_is_on_whenever_a_host_is_set(tools):
    docs = render_docs(sets=["ingress.host=zexec.example.org", "deployApi.ingress.enabled=true"])
    ing = one(docs, "Ingress")
    assert ing["spec"]["tls"] == [{"hosts": ["zexec.example.org"]}]
    denv = env_of(container(deployment(docs, "ep-api")), docs)
    assert denv["ZEXEC_EP_DEPLOY_API_URL"] == "https://zexec.example.org"
    hostless = one(render_docs(sets=["deployApi.ingress.enabled=true"]), "Ingress")
    assert "tls" not in hostless["spec"]  # never hosts: [""]


def test_broker_is_a_load_balancer_with_source_ranges_keeping_client_addresses(docs):
    ext = one(docs, "Service", "zexec-broker-external")
    assert ext["spec"]["type"] == "LoadBalancer"
    assert ext["spec"]["externalTrafficPolicy"] == "Local"
    assert ext["spec"]["loadBalancerSourceRanges"] == [
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    node = one(render_docs(sets=["broker.service.type=NodePort"]), "Service",
               "zexec-broker-external")
    assert [p["nodePort"] for p in node["spec"]["ports"]] == [30001, 30002]


def test_plain_client_port_is_a_value(tools):
    docs = render_docs(sets=["broker.plainPort.enabled=false"])
    ext = one(docs, "Service", "zexec-broker-external")
    assert [p["name"] for p in ext["spec"]["ports"]] == ["secure"]
    rule = one(docs, "NetworkPolicy", "zexec-broker")["spec"]["ingress"][0]
    assert [p["port"] for p in rule["ports"]] == [5562]
    refused(["broker.plainPort.enabled=false", "broker.tls.enabled=false"],
            "clients could not reach the broker")


def test_pod_security_labels_are_pinned_with_audit_and_warn(tools):
    from zexec.adapters.orchestrator_k8s import manifests as m
    from zexec.core.envspec import parse_env_spec

    docs = render_docs(sets=["namespace.create=true"])
    labels = one(docs, "Namespace", "zexec")["metadata"]["labels"]
    settings = k8s_settings(docs)
    user = m.build_namespace("zexec-u-a", "a", "a", parse_env_spec(["python==3.11"]), "p",
                             settings.pod_security_level, settings.pod_security_version)
    for got in (labels, user["metadata"]["labels"]):
        for mode in ("enforce", "audit", "warn"):
            assert got[f"pod-security.kubernetes.io/{mode}"] == "restricted"
            assert got[f"pod-security.kubernetes.io/{mode}-version"] == "v1.31"


def test_pull_secrets_reach_the_deploy_api_as_files_for_user_namespaces(tools):
    docs = render_docs(values=[CHART / "examples" / "site-images.yaml"],
                       sets=["deployApi.kubernetes.imagePullSecrets[0].name=servers-only"])
    api = deployment(docs, "deploy-api")
    denv = env_of(container(api), docs)
    assert denv["ZEXEC_K8S_PULL_SECRETS_DIR"] == "/etc/zexec/pull-secrets"
    volume = next(v for v in pod_spec(api)["volumes"] if v["name"] == "pull-secrets")
    assert [s["secret"]["name"] for s in volume["projected"]["sources"]] == [
        "registry-example-org", "servers-only"]
    assert volume["projected"]["sources"][0]["secret"]["items"] == [
        {"key": ".dockerconfigjson", "path": "registry-example-org/.dockerconfigjson"}]
    none = env_of(container(deployment(render_docs(), "deploy-api")))
    assert none["ZEXEC_K8S_PULL_SECRETS_DIR"] == ""


def test_notes_name_the_package_path_source_ranges_and_gitops_secrets(tools, tmp_path):
    from chart_support import render_notes

    notes = render_notes(tmp_path / "a")
    assert "Requirements install from http://pypi-proxy.zexec-pypi.svc:3141/" in notes
    assert "The load balancer admits 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16" in notes
    assert "broker.*.existingSecret" in notes
    assert "pod-security.kubernetes.io/warn-version=v1.31" in notes
    empty = render_notes(tmp_path / "b", sets=["deployApi.kubernetes.pipIndexUrl=",
                                               "deployApi.kubernetes.packageProxy.enabled=false"])
    assert "WARNING: deployApi.kubernetes.pipIndexUrl is empty" in empty


def test_server_images_by_digest(tools, tmp_path):
    from zexec.adapters.orchestrator_k8s import images

    digest = "sha256:" + "c" * 64
    values = tmp_path / "digests.yaml"
    values.write_text(f'deployApi:\n  kubernetes:\n    serverImageDigests:\n      "3.12": "{digest}"\n')
    settings = k8s_settings(render_docs(values=[values]))
    assert images.server_image(settings, "3.12") == f"zexec/server@{digest}"
    assert images.server_image(settings, "3.11") == "zexec/server:py3.11"
    values.write_text('deployApi:\n  kubernetes:\n    serverImageDigests:\n      "3.12": "latest"\n')
    with pytest.raises(HelmError):
        helm_template(values=[values])


def server_job() -> dict:
    """A server Job as the orchestrator builds it."""
    from zexec.adapters.orchestrator_k8s import jobs
    from zexec.adapters.orchestrator_k8s import manifests as m
    from zexec.core.envspec import parse_env_spec
    from zexec.settings import KubernetesSettings

    pod = m.build_pod("zexec-u-bob", "p", "bob", parse_env_spec(["python==3.12", "six"]),
                      "img", KubernetesSettings(), {})
    return jobs.build_job(pod)


def test_the_admission_policy_cel_denies_writes_outside_user_namespaces_and_other_bindings(docs):
    import kmock
    from admission_support import admission_errors

    def req(method, plural, namespace=None, name=None, data=None, group=""):
        return type("Request", (), {
            "method": method, "resource": kmock.resource(group, "v1", plural),
            "namespace": namespace, "name": name, "subresource": None, "data": data or {},
            "params": {}})

    rbac = "rbac.authorization.k8s.io"
    me = {"kind": "ServiceAccount", "name": "zexec-deploy-api", "namespace": "zexec"}
    good_ns = {"metadata": {"name": "zexec-u-bob", "labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}}
    role = {"kind": "ClusterRole", "name": "zexec-zexec-deploy-api-user"}
    allowed = [
        req(kmock.method.POST, "namespaces", data=good_ns),
        req(kmock.method.POST, "rolebindings", "zexec-u-bob", group=rbac,
            data={"roleRef": role, "subjects": [me]}),
        req(kmock.method.POST, "jobs", "zexec-u-bob", group="batch", data=server_job()),
        req(kmock.method.DELETE, "namespaces", name="zexec-u-bob"),
    ]
    assert admission_errors(allowed, docs) == []
    # A server Job's pod template is checked where the Deploy API writes it (the job
    # controller makes the pods): each breach is denied.
    breaches = {
        "token": lambda t: t.update(automountServiceAccountToken=True),
        "no-token-setting": lambda t: t.pop("automountServiceAccountToken"),
        "host-network": lambda t: t.update(hostNetwork=True),
        "host-pid": lambda t: t.update(hostPID=True),
        "host-ipc": lambda t: t.update(hostIPC=True),
        "host-path": lambda t: t["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
        "restart": lambda t: t.update(restartPolicy="OnFailure"),
    }
    for what, breach in breaches.items():
        job = server_job()
        breach(job["spec"]["template"]["spec"])
        errors = admission_errors(
            [req(kmock.method.POST, "jobs", "zexec-u-bob", group="batch", data=job)], docs)
        assert any("server Job's pods must not" in e for e in errors), (what, errors)
    for bad, message in [
        (req(kmock.method.POST, "namespaces", data={"metadata": {"name": "kube-system"}}),
         "may only write in namespaces named zexec-u-*"),
        (req(kmock.method.POST, "namespaces", data={"metadata": {"name": "zexec-u-x"}}),
         "must carry label pod-security.kubernetes.io/enforce=restricted"),
        (req(kmock.method.POST, "pods", "default", data={"metadata": {"name": "p"}}),
         "may only write in namespaces named zexec-u-*"),
        (req(kmock.method.POST, "rolebindings", "zexec-u-bob", group=rbac,
             data={"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [me]}),
         "may only bind ClusterRole zexec-zexec-deploy-api-user to itself"),
        (req(kmock.method.POST, "rolebindings", "zexec-u-bob", group=rbac,
             data={"roleRef": role, "subjects": [dict(me, name="someone-else")]}),
         "may only bind ClusterRole zexec-zexec-deploy-api-user to itself"),
    ]:
        errors = admission_errors([bad], docs)
        assert any(message in e for e in errors), (message, errors)
