"""The Kubernetes objects the orchestrator builds: schema-valid (strict) and locked down."""

from __future__ import annotations

import base64

import kubernetes_validate
import pytest

from zexec.adapters.orchestrator_k8s import manifests as m
from zexec.core.envspec import parse_env_spec
from zexec.core.errors import ConfigurationError
from zexec.settings import KubernetesSettings

K8S = "1.31.0"
SPEC = parse_env_spec(["python==3.11", "six", "numpy>=1.26"])
BARE = parse_env_spec(["python==3.11"])
SETTINGS = KubernetesSettings(
    extra_egress_cidrs="10.20.0.0/16, 192.168.1.10/32",
    broker_pod_labels="app.kubernetes.io/component=broker,app.kubernetes.io/name=zexec",
    pip_index_url="https://pypi.mirror.example/simple",
)
NS = "zexec-u-alice"
LABELS = m.server_labels("alice", SPEC)
GPU = {
    "containers": [{"name": "server", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
    "nodeSelector": {"gpu": "a100"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}],
}


def pod(spec=SPEC, **kw):
    return m.build_pod(NS, "zexec-server-x", "alice", spec, "img:1", SETTINGS, LABELS, **kw)


def all_docs():
    return [
        m.build_namespace(NS, "alice", "alice", SPEC, "zexec-server-x", "restricted"),
        m.build_network_policy(NS, SETTINGS, LABELS),
        m.build_network_policy(NS, KubernetesSettings(), LABELS),
        m.build_config_map(NS, SPEC, LABELS),
        m.build_secret(NS, "cred", LABELS),
        pod(),
        pod(BARE),
        pod(overrides=[GPU]),
    ]


@pytest.mark.parametrize("doc", all_docs(), ids=lambda d: d["kind"])
def test_every_object_validates_strictly(doc):
    kubernetes_validate.validate(doc, K8S, strict=True)


def test_strict_validation_catches_a_misspelt_field():
    bad = pod()
    bad["spec"]["automountServiceAcountToken"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S, strict=True)


@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        ("alice", "zexec-u-alice"),
        ("Alice", "zexec-u-alice-3bc51062"),
        ("bob@example.org", "zexec-u-bob-example-org-"),
        ("日本", "zexec-u-"),
        ("x" * 100, "zexec-u-xxxxx"),
    ],
)
def test_namespace_names_are_dns_labels(user_id, expected):
    name = m.namespace_name("zexec-u-", user_id)
    assert name.startswith(expected) and len(name) <= 63
    assert m._DNS_LABEL.fullmatch(name)
    kubernetes_validate.validate(
        m.build_namespace(name, user_id, name[8:], SPEC, "p", ""), K8S, strict=True
    )


def test_distinct_users_get_distinct_namespaces():
    ids = ["alice", "Alice", "ALICE", "a.lice", "a_lice", "x" * 80, "x" * 81]
    assert len({m.namespace_name("zexec-u-", u) for u in ids}) == len(ids)


def test_bad_prefix_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="prefix"):
        m.namespace_name("Zexec_", "alice")


def test_pod_is_locked_down():
    p = pod()
    spec = p["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 1000
    for c in spec["initContainers"] + spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert c["resources"]["limits"] == {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "10Gi"}
    assert p["metadata"]["labels"] == {
        "app.kubernetes.io/name": "zexec-server",
        "app.kubernetes.io/component": "server",
        "app.kubernetes.io/managed-by": "zexec",
        "zexec.io/user": "alice",
        "zexec.io/env-digest": SPEC.digest[:16],
    }


def test_requirements_are_data_never_command_lines():
    p = pod(overrides=[GPU])
    commands = [c["command"] for c in p["spec"]["initContainers"] + p["spec"]["containers"]]
    flat = " ".join(" ".join(c) for c in commands)
    for req in SPEC.requirements:
        assert req not in flat
    assert "sh" not in {c[0] for c in commands}
    (install,) = p["spec"]["initContainers"]
    assert install["command"][-2:] == ["-r", "/etc/zexec/requirements.txt"]
    cm = m.build_config_map(NS, SPEC, LABELS)
    assert cm["data"]["requirements.txt"] == "".join(r + "\n" for r in SPEC.requirements)
    vols = {v["name"]: v for v in p["spec"]["volumes"]}
    assert vols["env"]["configMap"]["name"] == cm["metadata"]["name"]


def test_server_env_and_readiness():
    server = pod()["spec"]["containers"][0]
    env = {e["name"]: e for e in server["env"]}
    assert env["ZEXEC_SERVER_USER_ID"]["value"] == "alice"
    assert env["ZEXEC_SERVER_CREDENTIAL"]["valueFrom"]["secretKeyRef"]["name"] == "zexec-server"
    assert env["ZEXEC_SERVER_READY_FILE"]["value"] == m.READY_FILE
    assert server["readinessProbe"]["exec"]["command"] == ["test", "-f", m.READY_FILE]
    assert server["command"] == ["/opt/zexec/venv/bin/python", "-m", "zexec.apps.server"]
    assert pod(BARE)["spec"]["containers"][0]["command"][0] == "python"
    assert "initContainers" not in pod(BARE)["spec"]


def test_secret_carries_the_credential():
    s = m.build_secret(NS, "c0ffee", LABELS)
    assert base64.b64decode(s["data"]["credential"]) == b"c0ffee"


def test_network_policy_allows_only_broker_dns_and_extra_cidrs():
    spec = m.build_network_policy(NS, SETTINGS, LABELS)["spec"]
    assert spec["podSelector"] == {} and spec["ingress"] == []
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    broker, dns, extra = spec["egress"]
    assert broker["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "zexec"}},
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/component": "broker",
                    "app.kubernetes.io/name": "zexec",
                }
            },
        }
    ]
    assert broker["ports"] == [{"protocol": "TCP", "port": 5560}]
    assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    # DNS only at the cluster DNS pods, not port 53 of any address (a tunnel out).
    assert dns["to"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }]
    other = m.build_network_policy(NS, KubernetesSettings(
        dns_namespace="dns", dns_pod_labels="app=coredns,tier=dns"), LABELS)
    assert other["spec"]["egress"][1]["to"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}},
        "podSelector": {"matchLabels": {"app": "coredns", "tier": "dns"}},
    }]
    assert all(rule.get("to") for rule in spec["egress"])  # no rule open to every address
    assert extra == {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}},
                            {"ipBlock": {"cidr": "192.168.1.10/32"}}],
                     "ports": [{"protocol": "TCP", "port": 443}]}  # fmt: skip
    assert all(rule.get("ports") for rule in spec["egress"])  # no rule open on every port
    assert len(m.build_network_policy(NS, KubernetesSettings(), LABELS)["spec"]["egress"]) == 2


def test_overrides_merge_by_name_append_and_replace():
    p = pod(overrides=[GPU, {"nodeSelector": {"zone": "b"}, "priorityClassName": "hi"}])
    spec = p["spec"]
    server = spec["containers"][0]
    assert len(spec["containers"]) == 1
    assert server["resources"]["limits"] == {
        "cpu": "2", "memory": "4Gi", "ephemeral-storage": "10Gi", "nvidia.com/gpu": "1"}
    assert server["securityContext"]["runAsNonRoot"] is True  # untouched by the merge
    assert spec["nodeSelector"] == {"gpu": "a100", "zone": "b"}
    assert spec["tolerations"][-1:] == GPU["tolerations"]  # appended to the lost-node ones
    assert [v["name"] for v in spec["volumes"]] == ["env", "venv", "tmp", "run", "data"]
    assert spec["priorityClassName"] == "hi"
    assert m.merge_overrides({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert m.merge_overrides({"t": [{"k": 1}]}, {"t": [{"k": 2}]}) == {"t": [{"k": 1}, {"k": 2}]}


def test_settings_parsing_errors():
    with pytest.raises(ConfigurationError, match="no port"):
        m.broker_port("tcp://broker")
    with pytest.raises(ConfigurationError, match="key=value"):
        m.parse_labels("app")


def test_package_proxy_is_reached_by_selector_on_its_ports_only():
    settings = KubernetesSettings(
        package_proxy_namespace="zexec-pypi",
        package_proxy_pod_labels="app.kubernetes.io/name=pypi-proxy",
        package_proxy_ports="3141",
        extra_egress_cidrs="10.9.0.0/16",
        extra_egress_ports="443,8443",
    )
    egress = m.build_network_policy(NS, settings, LABELS)["spec"]["egress"]
    proxy, cidrs = egress[2], egress[3]
    assert proxy == {
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "zexec-pypi"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "pypi-proxy"}},
        }],
        "ports": [{"protocol": "TCP", "port": 3141}],
    }
    assert cidrs["ports"] == [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8443}]
    with pytest.raises(ConfigurationError, match="at least one port"):
        m.build_network_policy(NS, KubernetesSettings(
            extra_egress_cidrs="10.9.0.0/16", extra_egress_ports=""), LABELS)


def test_user_pods_have_bounded_disk_and_a_read_only_root():
    p = pod()
    volumes = {v["name"]: v for v in p["spec"]["volumes"]}
    assert volumes["venv"]["emptyDir"] == {"sizeLimit": "8Gi"}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "2Gi"}
    for c in p["spec"]["initContainers"] + p["spec"]["containers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["resources"]["requests"]["ephemeral-storage"] == "1Gi"
        assert c["resources"]["limits"]["ephemeral-storage"] == "10Gi"


@pytest.mark.parametrize("installer,trusted", [("uv", "UV_INSECURE_HOST"),
                                               ("pip", "PIP_TRUSTED_HOST")])
def test_a_plain_http_index_is_trusted_an_https_one_needs_not(installer, trusted):
    def install_env(url):
        settings = KubernetesSettings(pip_index_url=url, installer=installer)
        p = m.build_pod(NS, "x", "alice", SPEC, "img:1", settings, LABELS)
        (install,) = p["spec"]["initContainers"]
        return {e["name"]: e["value"] for e in install["env"]}

    http = install_env("http://pypi-proxy.zexec-pypi.svc:3141/root/pypi/+simple/")
    assert http[trusted] == "pypi-proxy.zexec-pypi.svc"
    assert trusted not in install_env("https://pypi.mirror.example/simple")


def test_server_images_by_digest_when_listed():
    from zexec.adapters.orchestrator_k8s import images

    d = "sha256:" + "b" * 64
    s = KubernetesSettings(server_image="registry.example.org:5000/zexec/server:py{python}",
                           server_image_digests=f"3.12={d}")
    assert images.server_image(s, "3.12") == f"registry.example.org:5000/zexec/server@{d}"
    assert images.server_image(s, "3.11") == "registry.example.org:5000/zexec/server:py3.11"
    assert images.server_image(KubernetesSettings(), "3.13") == "zexec/server:py3.13"


def test_a_lost_nodes_pod_is_deleted_after_lost_node_seconds():
    p = m.build_pod(NS, "x", "alice", SPEC, "img:1",
                    KubernetesSettings(lost_node_seconds=45), LABELS)
    assert p["spec"]["tolerations"] == [
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 45},
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 45},
    ]


CACHE = '{"persistentVolumeClaim": {"claimName": "zexec-uv-cache"}}'


def test_install_step_with_uv_and_a_shared_cache():
    settings = SETTINGS.model_copy(update={"installer": "uv", "install_cache_volume": CACHE})
    p = m.build_pod(NS, "zexec-server-x", "alice", SPEC, "img:1", settings, LABELS)
    kubernetes_validate.validate(p, K8S, strict=True)
    (install,) = p["spec"]["initContainers"]
    assert install["command"][:5] == [
        "python", "-m", "zexec.adapters.orchestrator_k8s.install_env", "--installer", "uv"]
    assert install["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e["value"] for e in install["env"]}
    assert env["UV_CACHE_DIR"] == m.CACHE_DIR and "UV_NO_CACHE" not in env
    assert env["UV_INDEX_URL"] == "https://pypi.mirror.example/simple"
    assert {"name": "install-cache", "mountPath": m.CACHE_DIR} in install["volumeMounts"]
    vols = {v["name"]: v for v in p["spec"]["volumes"]}
    assert vols["install-cache"]["persistentVolumeClaim"] == {"claimName": "zexec-uv-cache"}
    # The server never sees the cache.
    assert all(vm["name"] != "install-cache"
               for vm in p["spec"]["containers"][0]["volumeMounts"])


def test_install_step_with_pip_and_without_a_cache():
    settings = SETTINGS.model_copy(update={"installer": "pip"})
    (install,) = pod_with(settings)["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in install["env"]}
    assert install["command"][4] == "pip"
    assert env["PIP_NO_CACHE_DIR"] == "1" and env["PIP_INDEX_URL"]
    uv = pod_with(SETTINGS.model_copy(update={"installer": "uv"}))
    uv_env = {e["name"]: e["value"] for e in uv["spec"]["initContainers"][0]["env"]}
    assert uv_env["UV_NO_CACHE"] == "1"
    assert "install-cache" not in {v["name"] for v in uv["spec"]["volumes"]}
    assert "initContainers" not in pod_with(settings, BARE)["spec"]  # nothing to install


@pytest.mark.parametrize("bad", ["{", "[]", '{"a": {}, "b": {}}'])
def test_install_cache_volume_must_be_one_volume_source(bad):
    with pytest.raises(ConfigurationError, match="install_cache_volume"):
        pod_with(SETTINGS.model_copy(update={"install_cache_volume": bad}))


def pod_with(settings, spec=SPEC):
    return m.build_pod(NS, "zexec-server-x", "alice", spec, "img:1", settings, LABELS)


def test_install_env_steps_keep_requirements_in_the_file():
    from zexec.adapters.orchestrator_k8s.install_env import steps

    for installer in ("uv", "pip"):
        venv_step, install_step = steps(installer, "/v", "/etc/zexec/requirements.txt")
        assert "--system-site-packages" in venv_step and venv_step[-1] == "/v"
        assert install_step[-2:] == ["-r", "/etc/zexec/requirements.txt"]
        assert "/v/bin/python" in install_step
