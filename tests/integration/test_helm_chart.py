"""The Kubernetes deployment artefacts, checked offline (issue 4).

- the pinned helm/kubectl fetch (scripts/k8s-tools.sh) and the CI check script
  (scripts/check-chart.sh: helm lint --strict, helm template with the defaults and every
  example, kubernetes-validate --strict, policy checks) pass on the chart, and fail on a
  broken template, a values-schema violation and an invalid rendered object;
- acceptance: no cluster-wide permission beyond the documented ClusterRole, no container
  without resource limits, none able to run as root, only the Deploy API holds a token;
- the chart and the code agree: every ZEXEC_* variable is a settings field, the
  Kubernetes orchestrator's settings and the per-user server workload match what the
  chart sets up (namespace prefix, labels, broker URL/port, images, secret names, RBAC);
- the apps start with the exact environment the chart gives them, and answer the
  chart's probes; the images' entrypoints and healthcheck exist;
- every value is documented in the chart README with its default; NOTES.txt tells the
  operator the client URLs.

Rendering happens once per module (fixtures); helm is fetched once into .tools/.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml
from chart_support import (
    CHART,
    KUBE_VERSION,
    ROOT,
    SERVER_LABELS,
    TOOLS,
    HelmError,
    checks,
    container,
    deployment,
    ensure_tools,
    env_of,
    find,
    helm_template,
    one,
    render_docs,
    render_notes,
    request_errors,
    server_workload_errors,
    settings_env_names,
)

README = CHART / "README.md"
EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
CHECK_SCRIPT = ROOT / "scripts" / "check-chart.sh"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tools() -> Path:
    return ensure_tools()


@pytest.fixture(scope="module")
def rendered(tools) -> dict[str, list[dict]]:
    """Default values and every example, rendered once."""
    out = {"default": render_docs()}
    for ex in EXAMPLES:
        out[ex.stem] = render_docs(values=[ex])
    return out


@pytest.fixture(scope="module")
def default_docs(rendered) -> list[dict]:
    return rendered["default"]


def run_check_chart(chart: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHECK_SCRIPT), str(chart)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )


def broken_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "zexec"
    shutil.copytree(CHART, dst)
    return dst


# --------------------------------------------------------------------------- tools + CI


def test_tools_are_pinned_and_fetched_once(tools):
    helm_v = subprocess.run(
        [str(tools / "helm"), "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kubectl_v = subprocess.run(
        [str(tools / "kubectl"), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert helm_v == "v3.17.3"
    assert json.loads(kubectl_v)["clientVersion"]["gitVersion"] == "v1.31.9"
    assert tools == TOOLS / "bin"
    # Idempotent: a second run finds them and downloads nothing.
    before = (tools / "helm").stat().st_mtime_ns
    started = time.monotonic()
    assert ensure_tools() == tools
    assert time.monotonic() - started < 5
    assert (tools / "helm").stat().st_mtime_ns == before
    # The tools folder is git-ignored.
    ignored = subprocess.run(["git", "check-ignore", "-q", str(tools / "helm")], cwd=ROOT)
    assert ignored.returncode == 0


def test_ci_check_script_passes_on_the_chart(tools):
    out = run_check_chart(CHART)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "chart OK" in out.stdout
    for name in ["default", *(e.stem for e in EXAMPLES)]:
        assert re.search(
            rf"{re.escape(name)}\.yaml: OK \(\d+ documents, Kubernetes {KUBE_VERSION}\)", out.stdout
        )
    assert len(EXAMPLES) >= 3


def test_ci_fails_on_a_broken_template(tools, tmp_path):
    chart = broken_copy(tmp_path)
    (chart / "templates" / "broken.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
        "{{- if .Values.broker.drainTimeout }}\ndata: {}\n"  # no {{ end }}
    )
    out = run_check_chart(chart)
    assert out.returncode != 0
    assert "FAILED: helm lint (default)" in out.stderr
    assert "broken.yaml" in out.stdout + out.stderr


def test_ci_fails_on_a_values_schema_violation(tools, tmp_path):
    chart = broken_copy(tmp_path)
    (chart / "examples" / "bad.yaml").write_text("broker:\n  service:\n    type: Ingress\n")
    out = run_check_chart(chart)
    assert out.returncode != 0
    assert "FAILED: helm lint (bad)" in out.stderr
    assert "broker.service.type must be one of the following" in out.stdout


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            "securityContext.runAsUser=0",
            "securityContext.runAsUser: Must be greater than or equal to 1",
        ),
        ("broker.resources.limits=null", "broker.resources: limits is required"),
        ("deployApi.replica=2", "deployApi: Additional property replica is not allowed"),
        (
            "global.auth.mode=oidc",
            "global.auth.jwksUrl: String length must be greater than or equal to 1",
        ),
        ("global.auth.mode=ldap", "global.auth.mode must be one of the following"),
        (
            "epApi.catalog.type=ckan",
            "epApi.catalog.ckanUrl: String length must be greater than or equal to 1",
        ),
        (
            "deployApi.kubernetes.namespacePrefix=Users_",
            "deployApi.kubernetes.namespacePrefix: Does not match pattern",
        ),
    ],
)
def test_schema_rejects_bad_values_with_a_clear_message(tools, bad, message):
    with pytest.raises(HelmError) as err:
        helm_template(sets=[bad])
    assert "values don't meet the specifications of the schema" in str(err.value)
    assert message in str(err.value)


def test_ci_fails_on_an_invalid_rendered_object(tools, tmp_path):
    chart = broken_copy(tmp_path)
    shutil.rmtree(chart / "examples")  # the default values suffice to show it
    tpl = chart / "templates" / "broker-deployment.yaml"
    text = tpl.read_text()
    assert "  strategy:\n" in text
    tpl.write_text(text.replace("  strategy:\n", "  stratgy:\n", 1))  # helm renders it happily
    helm_template(chart)
    out = run_check_chart(chart)
    assert out.returncode != 0
    assert "FAILED: rendered manifests" in out.stderr
    assert f"Deployment/zexec-broker: invalid for Kubernetes {KUBE_VERSION} at spec" in out.stdout
    assert "'stratgy' was unexpected" in out.stdout


# --------------------------------------------------------------------------- acceptance


def all_sets(rendered):
    return [(name, docs) for name, docs in rendered.items()]


def test_no_cluster_wide_permission_beyond_the_documented_one(rendered):
    documented = checks.documented_roles(README)
    cluster, user = documented["-deploy-api"], documented["-deploy-api-user"]
    pool_rules = checks.documented_cluster_rules(README, "poolrole-rules")
    assert ("", "secrets", "get") not in pool_rules and ("", "secrets", "list") not in pool_rules
    # What the README documents is itself narrow: nothing can read a Secret, no
    # wildcard, no escalation verbs; cluster scope covers namespaces and the binding of
    # the per-user role only, and the per-user role nothing cluster-scoped.
    for group, resource, verb in cluster | user:
        assert "*" not in (group, resource, verb)
        assert verb not in ("escalate", "impersonate", "deletecollection", "update")
        if resource == "secrets":
            assert verb in ("create", "delete"), (resource, verb)
    assert cluster == {
        ("", "namespaces", v) for v in ("get", "list", "create", "patch", "delete")
    } | {("rbac.authorization.k8s.io", "rolebindings", "create"),
         ("rbac.authorization.k8s.io", "clusterroles", "bind")}
    for group, resource, _verb in user:
        assert group in ("", "batch", "networking.k8s.io"), group
        assert resource != "namespaces"
    # Servers are Jobs: the Deploy API makes no pod, and reads the Job's by listing.
    assert ("", "pods", "create") not in user and ("", "pods", "get") not in user
    assert {("batch", "jobs", v) for v in ("create", "get", "delete")} <= user
    for name, docs in all_sets(rendered):
        roles = {r["metadata"]["name"]: r for r in find(docs, "ClusterRole")}
        assert set(roles) == {"zexec-zexec-deploy-api", "zexec-zexec-deploy-api-user"}, name
        top, per_user = roles["zexec-zexec-deploy-api"], roles["zexec-zexec-deploy-api-user"]
        assert checks.expand_rules(top["rules"]) == cluster, name
        assert checks.expand_rules(per_user["rules"]) == user, name
        bind = [r for r in top["rules"] if "bind" in r["verbs"]]
        assert bind == [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                         "verbs": ["bind"], "resourceNames": ["zexec-zexec-deploy-api-user"]}]
        binding = one(docs, "ClusterRoleBinding")
        assert binding["roleRef"]["name"] == "zexec-zexec-deploy-api"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "zexec-deploy-api", "namespace": "zexec"}
        ]
        # The one namespaced Role: the warm pool's, in its namespace, as documented.
        pool_roles = find(docs, "Role")
        assert [(r["metadata"]["name"], r["metadata"]["namespace"]) for r in pool_roles] in (
            [], [("zexec-deploy-api-warm-pool", "zexec-pool")]), name
        for role in pool_roles:
            assert checks.expand_rules(role["rules"]) == pool_rules, name
        assert [(b["roleRef"]["name"], b["subjects"]) for b in find(docs, "RoleBinding")] == [
            (r["metadata"]["name"], [{"kind": "ServiceAccount", "name": "zexec-deploy-api",
                                      "namespace": "zexec"}]) for r in pool_roles], name
        denv = env_of(container(deployment(docs, "deploy-api")), docs)
        assert denv["ZEXEC_K8S_USER_ROLE"] == "zexec-zexec-deploy-api-user"
        assert denv["ZEXEC_K8S_SERVICE_ACCOUNT"] == "zexec:zexec-deploy-api"
        assert checks.rbac_errors(docs, documented) == []


def test_writes_are_confined_to_user_namespaces_by_admission_policy(default_docs):
    vap = one(default_docs, "ValidatingAdmissionPolicy")
    binding = one(default_docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": vap["metadata"]["name"], "validationActions": ["Deny"]}
    assert vap["spec"]["failurePolicy"] == "Fail"
    cond = vap["spec"]["matchConditions"][0]["expression"]
    assert cond == 'request.userInfo.username == "system:serviceaccount:zexec:zexec-deploy-api"'
    first, binding_rule, job_rule, second = (v["expression"] for v in vap["spec"]["validations"])
    assert 'request.resource.resource == "jobs"' in job_rule
    assert "automountServiceAccountToken == false" in job_rule
    assert 'request.name.startsWith("zexec-u-")' in first
    assert 'request.namespace.startsWith("zexec-u-")' in first
    assert 'object.roleRef.name == "zexec-zexec-deploy-api-user"' in binding_rule
    assert 'object.subjects[0].name == "zexec-deploy-api"' in binding_rule
    assert '== "restricted"' in second
    level = env_of(container(deployment(default_docs, "deploy-api")))[
        "ZEXEC_K8S_POD_SECURITY_LEVEL"
    ]
    assert level == "restricted"
    rule = vap["spec"]["matchConstraints"]["resourceRules"][0]
    assert set(rule["operations"]) >= {"CREATE", "UPDATE", "DELETE"}


def test_no_container_without_limits_and_none_can_run_as_root(rendered):
    seen = 0
    for name, docs in all_sets(rendered):
        for doc, meta, pod in checks.pod_specs(docs):
            psc = pod["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
            for c in checks.containers(pod):
                seen += 1
                where = f"{name}: {checks.describe(doc)}/{c['name']}"
                for part in ("requests", "limits"):
                    assert c["resources"][part]["cpu"] and c["resources"][part]["memory"], where
                sc = c["securityContext"]
                assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, where
                assert sc["allowPrivilegeEscalation"] is False and not sc.get("privileged"), where
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["capabilities"] == {"drop": ["ALL"]}, where
                assert c["readinessProbe"] and c["livenessProbe"], where
            component = meta["labels"]["app.kubernetes.io/component"]
            assert pod["automountServiceAccountToken"] is (component == "deploy-api"), where
        assert checks.pod_errors(docs) == [], name
    assert seen == 3 * len(rendered)


@pytest.mark.parametrize(
    "mutation, expected",
    [
        ("limits", "container broker: no resources.limits.cpu"),
        ("root", "container broker: runAsUser must be set and non-zero"),
        ("clusterrole", "unexpected ClusterRole/extra"),
        ("bind-anything", "privilege-escalation verb 'bind'"),
        ("bind-user-role-cluster-wide", "not the chart's cluster-scope ClusterRole"),
        ("read-secrets", "grants undocumented [('', 'secrets', 'get')]"),
        ("token", "Deployment/zexec-ep-api: automountServiceAccountToken must be false"),
        ("expose-backend", "Service/zexec-broker-external: exposes internal port"),
    ],
)
def test_policy_checks_catch_violations(default_docs, mutation, expected):
    docs = copy.deepcopy(default_docs)
    broker = deployment(docs, "broker")
    if mutation == "limits":
        del container(broker)["resources"]["limits"]
    elif mutation == "root":
        container(broker)["securityContext"]["runAsUser"] = 0
        broker["spec"]["template"]["spec"]["securityContext"].pop("runAsUser")
    elif mutation == "clusterrole":
        docs.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "extra"},
                "rules": [],
            }
        )
    elif mutation == "read-secrets":
        one(docs, "ClusterRole", "zexec-zexec-deploy-api-user")["rules"].append(
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
        )
    elif mutation == "bind-anything":
        one(docs, "ClusterRole", "zexec-zexec-deploy-api")["rules"][-1].pop("resourceNames")
    elif mutation == "bind-user-role-cluster-wide":
        one(docs, "ClusterRoleBinding")["roleRef"]["name"] = "zexec-zexec-deploy-api-user"
    elif mutation == "token":
        deployment(docs, "ep-api")["spec"]["template"]["spec"]["automountServiceAccountToken"] = (
            True
        )
    elif mutation == "expose-backend":
        one(docs, "Service", "zexec-broker-external")["spec"]["ports"].append(
            {"name": "backend", "port": 5560, "targetPort": "backend"}
        )
    errors = checks.policy_errors(docs, README)
    assert any(expected in e for e in errors), errors


def test_network_policies_cover_the_control_plane(default_docs):
    broker_np = one(default_docs, "NetworkPolicy", "zexec-broker")
    rules = {r["ports"][0]["port"]: r for r in broker_np["spec"]["ingress"]}
    assert set(rules) == {5559, 5560, 5561}
    assert "from" not in rules[5559]  # clients come from anywhere
    server_peer = rules[5560]["from"][0]
    assert server_peer["podSelector"]["matchLabels"] == SERVER_LABELS
    # Only from namespaces the Deploy API created: pod labels alone are anyone's to set.
    assert server_peer["namespaceSelector"] == {
        "matchLabels": {"app.kubernetes.io/managed-by": "zexec"}}
    more = render_docs(sets=["networkPolicy.serverNamespaceSelector.matchLabels.site=a"])
    peer = {r["ports"][0]["port"]: r for r in one(more, "NetworkPolicy", "zexec-broker")
            ["spec"]["ingress"]}[5560]["from"][0]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "zexec", "site": "a"}
    assert (
        rules[5561]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        == "deploy-api"
    )
    assert checks.network_errors(default_docs) == []
    ns = render_docs(sets=["namespace.create=true"])
    labels = one(ns, "Namespace", "zexec")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


def test_encrypted_client_port_is_on_by_default_with_a_self_signed_certificate(rendered):
    from cryptography import x509

    docs = rendered["default"]
    broker = container(deployment(docs, "broker"))
    assert {"name": "secure", "containerPort": 5562, "protocol": "TCP"} in broker["ports"]
    env = env_of(broker, docs)
    assert env["ZEXEC_BROKER_SECURE_PORT"] == "5562"
    assert env["ZEXEC_BROKER_TLS_CERT_FILE"] == "/etc/zexec/tls/tls.crt"
    assert env["ZEXEC_BROKER_TLS_KEY_FILE"] == "/etc/zexec/tls/tls.key"
    volumes = {v["name"]: v for v in deployment(docs, "broker")["spec"]["template"]["spec"]
               ["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "zexec-broker-tls"
    secret = one(docs, "Secret", "zexec-broker-tls")
    assert secret["type"] == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName)  # the broker's names
    assert b"PRIVATE KEY" in base64.b64decode(secret["data"]["tls.key"])
    ports = {p["name"]: p for p in one(docs, "Service", "zexec-broker-external")["spec"]["ports"]}
    assert ports["secure"]["targetPort"] == "secure" and ports["secure"]["port"] == 5562
    client_rule = one(docs, "NetworkPolicy", "zexec-broker")["spec"]["ingress"][0]
    assert {p["port"] for p in client_rule["ports"]} == {5559, 5562}
    assert "from" not in client_rule
    # The Deploy API gets the certificate (to publish its pin), never the key.
    api_dep = deployment(docs, "deploy-api")
    api = env_of(container(api_dep), docs)
    assert api["ZEXEC_DEPLOY_BROKER_EXTERNAL_SECURE_PORT"] == "5562"  # LoadBalancer
    assert api["ZEXEC_DEPLOY_BROKER_TLS_CERT_FILE"] == "/etc/zexec/broker-tls/tls.crt"
    api_volumes = {v["name"]: v for v in api_dep["spec"]["template"]["spec"]["volumes"]}
    assert api_volumes["broker-tls"]["secret"]["items"] == [{"key": "tls.crt",
                                                              "path": "tls.crt"}]
    assert checks.network_errors(docs) == []


def test_tls_example_uses_the_sites_certificate(rendered):
    docs = rendered["tls-existing-secret"]
    assert not find(docs, "Secret", "zexec-broker-tls")
    for component, volume in (("broker", "tls"), ("deploy-api", "broker-tls")):
        spec = deployment(docs, component)["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols[volume]["secret"]["secretName"] == "zexec-broker-cert"


def test_tls_can_be_turned_off():
    docs = render_docs(sets=["broker.tls.enabled=false"])
    broker = container(deployment(docs, "broker"))
    assert "secure" not in {p["name"] for p in broker["ports"]}
    assert not any("TLS" in e["name"] for e in broker["env"])
    assert not find(docs, "Secret", "zexec-broker-tls")
    api = env_of(container(deployment(docs, "deploy-api")), docs)
    assert "ZEXEC_DEPLOY_BROKER_TLS_CERT_FILE" not in api


def test_broker_memory_limit_covers_its_limits(rendered):
    """The arithmetic of the chart README's "Broker memory": the container's limit
    covers every bound the broker enforces, with the defaults."""
    docs = rendered["default"]
    broker = container(deployment(docs, "broker"))
    env = env_of(broker, docs)
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    limit = broker["resources"]["limits"]["memory"]
    limit_bytes = int(limit[:-2]) * units[limit[-2:]]
    held = (int(env["ZEXEC_BROKER_MAX_PAYLOAD_BYTES"]) + int(env["ZEXEC_BROKER_PREAUTH_TOTAL_BYTES"])
            + int(env["ZEXEC_BROKER_MAX_QUEUED_BYTES"]) + (256 << 20))
    assert limit_bytes >= held
    assert int(env["ZEXEC_BROKER_MAX_FRAME_BYTES"]) >= 1 << 30  # 1 GiB results pass


# --------------------------------------------------------------------------- chart <-> code


def test_every_zexec_variable_is_a_settings_field(rendered):
    known = set().union(*settings_env_names().values())
    for name, docs in all_sets(rendered):
        for doc, _meta, pod in checks.pod_specs(docs):
            for c in pod["containers"]:
                for e in c["env"]:
                    if e["name"].startswith("ZEXEC_"):
                        assert e["name"] in known, (
                            f"{name}: {checks.describe(doc)} sets unknown {e['name']}"
                        )


def test_kubernetes_orchestrator_settings_agree_with_the_chart(default_docs):
    from zexec.settings import BrokerSettings, DeploySettings, EPSettings, KubernetesSettings

    deploy = deployment(default_docs, "deploy-api")
    denv = env_of(container(deploy), default_docs)
    k8s = KubernetesSettings()
    # Every orchestrator setting is set explicitly by the chart ...
    for field in KubernetesSettings.model_fields:
        assert f"ZEXEC_K8S_{field.upper()}" in denv, field
    # ... and the default release ("zexec" in namespace "zexec") renders the code's defaults.
    for field in (
        "namespace_prefix",
        "server_image",
        "broker_backend_url",
        "broker_namespace",
        "cpu_request",
        "cpu_limit",
        "memory_request",
        "memory_limit",
        "extra_egress_cidrs",
        "dns_namespace",
        "dns_pod_labels",
        "server_secret_name",
        "server_workers",
        "pod_security_level",
        "extra_egress_ports",
        "lost_node_seconds",
        "namespace_ttl",
        "ephemeral_storage_request",
        "ephemeral_storage_limit",
        "venv_size_limit",
        "tmp_size_limit",
    ):
        assert denv[f"ZEXEC_K8S_{field.upper()}"] == str(getattr(k8s, field)), field
    # The package path is the chart's own default (an in-cluster proxy, documented there).
    assert denv["ZEXEC_K8S_PIP_INDEX_URL"].startswith("http://pypi-proxy.zexec-pypi.svc:")
    # Broker pod labels: what the orchestrator selects is what the broker pod carries.
    broker = deployment(default_docs, "broker")
    pod_labels = broker["spec"]["template"]["metadata"]["labels"]
    chart_sel = dict(kv.split("=", 1) for kv in denv["ZEXEC_K8S_BROKER_POD_LABELS"].split(","))
    code_sel = dict(kv.split("=", 1) for kv in k8s.broker_pod_labels.split(","))
    assert chart_sel == broker["spec"]["selector"]["matchLabels"]
    assert code_sel.items() <= chart_sel.items() <= pod_labels.items()
    # The backend URL points at the internal Service, on the broker's backend port.
    brokers = BrokerSettings()
    svc = one(default_docs, "Service", "zexec-broker")
    assert svc["spec"]["type"] == "ClusterIP"
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
        "backend": brokers.backend_port,
        "control": brokers.control_port,
    }
    assert (
        denv["ZEXEC_K8S_BROKER_BACKEND_URL"]
        == f"tcp://zexec-broker.zexec.svc:{brokers.backend_port}"
    )
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    # The server secret exists with key server-secret; the broker and the Deploy API share it.
    secret = one(default_docs, "Secret", denv["ZEXEC_K8S_SERVER_SECRET_NAME"])
    assert base64.b64decode(secret["data"]["server-secret"])
    benv = env_of(container(broker), default_docs)
    assert benv["ZEXEC_BROKER_SERVER_SECRET"] == denv["ZEXEC_BROKER_SERVER_SECRET"] != ""
    assert benv["ZEXEC_BROKER_ADMIN_TOKEN"] == denv["ZEXEC_BROKER_ADMIN_TOKEN"] != ""
    # External broker Service: a LoadBalancer, plain client port and encrypted one.
    ext = one(default_docs, "Service", "zexec-broker-external")
    assert ext["spec"]["type"] == "LoadBalancer"
    assert ext["spec"]["ports"] == [
        {
            "name": "frontend",
            "port": brokers.frontend_port,
            "targetPort": "frontend",
            "protocol": "TCP",
        },
        {
            "name": "secure",
            "port": brokers.secure_port,
            "targetPort": "secure",
            "protocol": "TCP",
        },
    ]
    assert denv["ZEXEC_DEPLOY_BROKER_EXTERNAL_PORT"] == "5559"
    # Server images: tags like py3.12 move, so they are pulled every time by default.
    assert denv["ZEXEC_K8S_IMAGE_PULL_POLICY"] == "Always"
    # HTTP apps: container ports and probe paths match the apps' settings.
    deploy_settings, ep_settings = DeploySettings(), EPSettings()
    dc = container(deploy)
    assert dc["ports"][0]["containerPort"] == int(denv["ZEXEC_DEPLOY_PORT"]) == deploy_settings.port
    assert dc["readinessProbe"]["httpGet"]["path"] == f"{denv['ZEXEC_DEPLOY_PREFIX']}/healthz"
    assert denv["ZEXEC_DEPLOY_PREFIX"] == deploy_settings.prefix == "/rexec"
    ec = container(deployment(default_docs, "ep-api"))
    assert ec["ports"][0]["containerPort"] == int(env_of(ec)["ZEXEC_EP_PORT"]) == ep_settings.port
    assert ec["readinessProbe"]["httpGet"]["path"] == "/health"


@pytest.fixture(scope="module")
def orchestrator_run(default_docs):
    """The real KubernetesOrchestrator, configured with exactly the ZEXEC_K8S_* and
    broker secret the chart gives the Deploy API, against the kmock API emulator:
    spawn, status (installing, with logs), forced replace, list, terminate. Returns the
    user's objects after the spawn and every API request it made."""
    import kmock
    import pluggy
    from kmock_support import running_emulator, server_pod
    from kubernetes import client

    from zexec.adapters.orchestrator_k8s import KubernetesOrchestrator
    from zexec.core.envspec import parse_env_spec
    from zexec.core.model import UserIdentity
    from zexec.plugins import PROJECT, ZexecSpec
    from zexec.settings import KubernetesSettings

    denv = env_of(container(deployment(default_docs, "deploy-api")), default_docs)
    settings = KubernetesSettings(
        **{f: denv[f"ZEXEC_K8S_{f.upper()}"] for f in KubernetesSettings.model_fields}
    )
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(ZexecSpec)  # no site plugins: the chart's server image applies
    with running_emulator() as (emu, api):
        orch = KubernetesOrchestrator(
            api,
            settings,
            denv["ZEXEC_BROKER_SERVER_SECRET"].encode(),
            pm,
            idle_timeout=float(denv["ZEXEC_DEPLOY_IDLE_TIMEOUT"]),
        )
        alice = UserIdentity("alice")
        orch.ensure(alice, parse_env_spec(["python==3.12", "six"]))
        ns = "zexec-u-alice"
        objects = [
            copy.deepcopy(o.raw)
            for (res, namespace, name), o in emu.objects.items()
            if not o.deleted and (namespace == ns or (res.plural == "namespaces" and name == ns))
        ]
        core = client.CoreV1Api(api)
        mine = len(list(emu))
        pod = server_pod(api, ns)  # the cluster's job controller makes the Job's pod
        core.patch_namespaced_pod_status(
            pod,
            ns,
            {
                "status": {
                    "phase": "Pending",
                    "initContainerStatuses": [
                        {
                            "name": "install",
                            "state": {"running": {"startedAt": "2024-05-01T10:00:00Z"}},
                        }
                    ],
                }
            },
            _preload_content=False,
        )
        skip = set(range(mine, len(list(emu))))
        emu[kmock.subresource("log")] << "Collecting six\n"
        assert orch.status("alice").phase == "installing"  # reads the installer's log
        orch.ensure(alice, parse_env_spec(["python==3.12", "numpy"]), force=True)
        orch.list()
        assert orch.terminate("alice")
        requests = [r for i, r in enumerate(emu) if i not in skip]
        assert any(r.method == kmock.method.PATCH for r in requests)
    return objects, requests


def test_per_user_server_workload_agrees_with_the_chart(default_docs, orchestrator_run):
    objects, _ = orchestrator_run
    assert {o["kind"] for o in objects} == {
        "Namespace",
        "RoleBinding",
        "ResourceQuota",
        "LimitRange",
        "NetworkPolicy",
        "Secret",
        "ConfigMap",
        "Job",
    }
    assert server_workload_errors(objects, default_docs, python="3.12") == []

    # Drift is caught: each mutation breaks one promise between orchestrator and chart.
    def pod(o):
        return next(x for x in o if x["kind"] == "Job")["spec"]["template"]

    def server(o):
        return pod(o)["spec"]["containers"][0]

    drifts = {
        "prefix": (
            lambda o: o[[x["kind"] for x in o].index("Namespace")]["metadata"].update(
                name="rexec-alice"
            ),
            "does not start with",
        ),
        "label": (
            lambda o: pod(o)["metadata"]["labels"].update(
                {"app.kubernetes.io/component": "worker"}
            ),
            "the broker NetworkPolicy admits",
        ),
        "broker-url": (
            lambda o: next(
                e for e in server(o)["env"] if e["name"] == "ZEXEC_SERVER_BROKER_URL"
            ).update(value="tcp://broker:5560"),
            "ZEXEC_SERVER_BROKER_URL",
        ),
        "image": (lambda o: server(o).update(image="python:3.12"), "server image"),
        "egress": (
            lambda o: next(x for x in o if x["kind"] == "NetworkPolicy")["spec"]["egress"][0][
                "ports"
            ][0].update(port=5559),
            "reaches the broker",
        ),
        "dns-anywhere": (
            lambda o: next(x for x in o if x["kind"] == "NetworkPolicy")["spec"]["egress"][1]
            .pop("to"),
            "open to every address",
        ),
        "dns-elsewhere": (
            lambda o: next(x for x in o if x["kind"] == "NetworkPolicy")["spec"]["egress"][1][
                "to"][0]["podSelector"]["matchLabels"].update({"k8s-app": "anything"}),
            "DNS reaches more than the cluster DNS pods",
        ),
        "unmanaged-namespace": (
            lambda o: o[[x["kind"] for x in o].index("Namespace")]["metadata"]["labels"].pop(
                "app.kubernetes.io/managed-by"),
            "does not select the user namespace",
        ),
        "kind": (
            lambda o: o.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}),
            "do not allow creating Service",
        ),
        "root": (
            lambda o: server(o)["securityContext"].update(runAsUser=0),
            "runAsUser must be set and non-zero",
        ),
    }
    for name, (mutate, expected) in drifts.items():
        objs = copy.deepcopy(objects)
        mutate(objs)
        errors = server_workload_errors(objs, default_docs, python="3.12")
        assert any(expected in e for e in errors), (name, errors)


def test_every_orchestrator_request_is_allowed_by_the_chart(default_docs, orchestrator_run):
    _, requests = orchestrator_run
    assert request_errors(requests, default_docs) == []
    # The rendered admission policy itself (its CEL) admits every write it made.
    from admission_support import admission_errors

    assert admission_errors(requests, default_docs) == []
    granted = set().union(*(checks.expand_rules(r["rules"])
                            for r in find(default_docs, "ClusterRole")))
    granted.discard(("rbac.authorization.k8s.io", "clusterroles", "bind"))  # no request
    # Deleting a bare server pod: only in a namespace made before servers were Jobs
    # (tests/integration/test_orchestrator_k8s.py covers it), not in this run.
    granted.discard(("", "pods", "delete"))
    used = set()
    for r in requests:
        if r.resource is not None:
            verb = {
                "GET": "get" if r.name else "list",
                "POST": "create",
                "PATCH": "patch",
                "DELETE": "delete",
            }[str(r.method).rsplit(".", 1)[-1].upper()]
            used.add(
                (
                    r.resource.group,
                    r.resource.plural + (f"/{r.subresource}" if r.subresource else ""),
                    verb,
                )
            )
    # Least privilege: the ClusterRoles grant what the orchestrator uses, nothing more.
    assert used == granted, (
        f"unused grants {sorted(granted - used)}, missing {sorted(used - granted)}"
    )
    # And requests outside that would be refused.
    import kmock

    def fake(method, plural, namespace=None, name=None, data=None, group=""):
        return type(
            "Request",
            (),
            {
                "method": method,
                "resource": kmock.resource(group, "v1", plural),
                "namespace": namespace,
                "name": name,
                "subresource": None,
                "data": data or {},
                "params": {},
            },
        )

    for req, expected in [
        (
            fake(kmock.method.POST, "namespaces", data={"metadata": {"name": "kube-system"}}),
            "namespace name",
        ),
        (
            fake(kmock.method.POST, "namespaces", data={"metadata": {"name": "zexec-u-bob"}}),
            "no Pod Security label",
        ),
        (fake(kmock.method.POST, "pods", namespace="default"), "outside zexec-u-*"),
        (fake(kmock.method.GET, "secrets", namespace="zexec-u-bob", name="x"), "RBAC denies"),
        (fake(kmock.method.POST, "services", namespace="zexec-u-bob"), "RBAC denies"),
        # No read outside a namespace where the Deploy API bound its per-user role.
        (fake(kmock.method.GET, "pods", namespace="kube-system", name="x"), "RBAC denies"),
        (fake(kmock.method.GET, "configmaps", namespace="zexec-u-bob"), "RBAC denies"),
        (fake(kmock.method.POST, "rolebindings", namespace="zexec-u-bob", group="rbac.authorization.k8s.io",
              data={"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}}),
         "RBAC denies binding ClusterRole/cluster-admin"),
    ]:
        assert any(expected in e for e in request_errors([req], default_docs)), expected


# --------------------------------------------------------------------------- docs


def _leaves(value, path=""):
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    else:
        yield path, value


def test_readme_lists_every_value_with_its_default():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = README.read_text()
    rows = dict(re.findall(r"^\| `([^`]+)` \| `([^`]*)` \|", readme, re.M))
    for path, default in _leaves(values):
        assert path in rows, f"README does not document {path}"
        assert json.loads(rows[path]) == default, (
            f"README default of {path}: {rows[path]} != {default!r}"
        )
    # The schema knows no value the defaults (and so the README) leave out.
    schema = json.loads((CHART / "values.schema.json").read_text())

    def schema_paths(node, path=""):
        node = schema["$defs"][node["$ref"].split("/")[-1]] if "$ref" in node else node
        props = node.get("properties")
        if not props or node.get("additionalProperties") is not False:
            yield path
            return
        for k, v in props.items():
            yield from schema_paths(v, f"{path}.{k}" if path else k)

    value_paths = {p for p, _ in _leaves(values)}
    for p in schema_paths(schema):
        assert (
            p in value_paths
            or any(v.startswith(p + ".") for v in value_paths)
            or p.startswith("global")
        ), f"schema allows {p}, which values.yaml/README do not list"


def test_notes_tell_the_operator_the_client_urls(tools, tmp_path):
    notes = render_notes(
        tmp_path / "a",
        sets=[
            "ingress.host=zexec.example.org",
            "ingress.tls.enabled=true",
            "deployApi.ingress.enabled=true",
            "epApi.ingress.enabled=true",
            "broker.external.host=broker.example.org",
            "global.auth.url=https://idp.example.org/v",
        ],
    )
    assert "https://zexec.example.org/api" in notes
    assert "https://zexec.example.org\n" in notes
    assert "tcp://broker.example.org:5559" in notes  # LoadBalancer: the Service port
    assert "WARNING" not in notes
    assert "kubectl get namespaces -o name | grep '^namespace/zexec-u-'" in notes
    defaults = render_notes(tmp_path / "b")
    assert "WARNING: broker.external.host" in defaults
    assert "WARNING: global.auth.url is not set" in defaults
    assert "in-cluster address" in defaults


def test_docs_walk_through_install_idp_broker_upgrade_uninstall_and_site_images():
    text = (ROOT / "docs" / "deploy-kubernetes.md").read_text()
    for heading in (
        "Install",
        "identity provider",
        "Expose the broker",
        "Upgrade",
        "Uninstall",
        "server images",
    ):
        assert re.search(rf"^#+ .*{heading}", text, re.M | re.I), heading
    for must in (
        "global.auth.url",
        "broker.external.host",
        "zexec_server_image",
        "helm uninstall",
        "zexec-u-",
        "scripts/check-chart.sh",
    ):
        assert must in text, must


# --------------------------------------------------------------------------- images + apps


def _dockerfile(name: str) -> str:
    return (ROOT / "deploy" / "docker" / name).read_text()


def test_images_are_pinned_non_root_and_call_existing_entrypoints():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    apps, server = _dockerfile("Dockerfile"), _dockerfile("Dockerfile.server")
    from zexec.adapters.orchestrator_k8s import manifests

    # Non-root: the apps as 10001, servers as the uid the orchestrator's pods run as.
    assert re.search(r"^USER 10001:10001$", apps, re.M)
    assert re.search(rf"^USER {manifests.UID}:{manifests.UID}$", server, re.M)
    for text in (apps, server):
        assert "HEALTHCHECK" in text
        assert not re.search(r"^FROM \S+:latest", text, re.M)
        assert "gcc" not in text and "build-essential" not in text
        assert text.count("\nFROM ") == 2  # multi-stage: build, then final
        for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
            assert (ROOT / src).exists(), src
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", apps, re.M)
    assert re.search(r"^ARG PYTHON_VERSION=3\.1\d\.\d+$", server, re.M)
    # Entrypoints: `zexec` console script (broker / deploy-api / ep-api) and the server module.
    assert 'ENTRYPOINT ["zexec"]' in apps and "zexec" in scripts
    assert 'CMD ["python", "-m", "zexec.apps.server"]' in server
    assert importlib.util.find_spec("zexec.apps.server.__main__") is not None
    builds = (ROOT / "deploy" / "docker" / "build-images.sh").read_text()
    versions = re.search(r'PYTHONS="([^"]+)"', builds).group(1).split()
    assert [v.rsplit(".", 1)[0] for v in versions] == ["3.11", "3.12", "3.13"]  # what requires-python allows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _app_command(args: list[str]) -> list[str]:
    """How the image runs ``zexec <args>``; until the `zexec` CLI module exists, the same
    app through its ``python -m`` module."""
    if importlib.util.find_spec("zexec.apps.cli.main") is not None:
        return [
            sys.executable,
            "-c",
            "import sys; from zexec.apps.cli.main import main; sys.exit(main())",
            *args,
        ]
    module = {
        "broker": "zexec.apps.broker",
        "deploy-api": "zexec.apps.deploy_api",
        "ep-api": "zexec.apps.ep_api",
    }
    return [sys.executable, "-m", module[args[0]], *args[1:]]


def _wait(check, what: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{out[-3000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} not ready after {timeout}s")


def _tcp(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def _http(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def test_apps_start_with_the_chart_environment_and_answer_its_probes(tools, tmp_path):
    """Each app is started with the environment the chart renders (secrets resolved; only
    bind address, ports, orchestrator and writable paths adapted to a test machine), then
    probed as the chart's probes and the image's HEALTHCHECK do."""
    from zexec.core.protocol import server_credential

    docs = render_docs(sets=["global.auth.url=http://127.0.0.1:9/validate"])
    hc_spec = importlib.util.spec_from_file_location(
        "zexec_healthcheck", ROOT / "deploy" / "docker" / "healthcheck.py"
    )
    hc = importlib.util.module_from_spec(hc_spec)
    hc_spec.loader.exec_module(hc)

    ports = {k: _free_port() for k in ("frontend", "backend", "control", "secure", "deploy",
                                       "ep")}
    base = {k: v for k, v in os.environ.items() if not k.startswith("ZEXEC_")}
    base["HOME"] = str(tmp_path)
    procs: list[subprocess.Popen] = []

    def start(
        component: str, overrides: dict[str, str], cmd: list[str] | None = None
    ) -> subprocess.Popen:
        c = container(deployment(docs, component)) if component != "server" else None
        env = {**base, **(env_of(c, docs) if c else {}), **overrides}
        env["HOME"], env["ZEXEC_DEPLOY_STATE_DIR"] = str(tmp_path), str(tmp_path / "state")
        p = subprocess.Popen(
            cmd or _app_command(c["args"]),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(p)
        return p

    # The TLS Secret's files, as the pods mount them.
    tls = one(docs, "Secret", "zexec-broker-tls")["data"]
    for key in ("tls.crt", "tls.key"):
        (tmp_path / key).write_bytes(base64.b64decode(tls[key]))
    try:
        broker = start(
            "broker",
            {
                "ZEXEC_BROKER_HOST": "127.0.0.1",
                "ZEXEC_BROKER_FRONTEND_PORT": str(ports["frontend"]),
                "ZEXEC_BROKER_BACKEND_PORT": str(ports["backend"]),
                "ZEXEC_BROKER_CONTROL_PORT": str(ports["control"]),
                "ZEXEC_BROKER_SECURE_PORT": str(ports["secure"]),
                "ZEXEC_BROKER_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
                "ZEXEC_BROKER_TLS_KEY_FILE": str(tmp_path / "tls.key"),
            },
        )
        deploy = start(
            "deploy-api",
            {
                "ZEXEC_DEPLOY_HOST": "127.0.0.1",
                "ZEXEC_DEPLOY_PORT": str(ports["deploy"]),
                "ZEXEC_DEPLOY_ORCHESTRATOR": "memory",  # no cluster here
                "ZEXEC_DEPLOY_BROKER_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
            },
        )
        ep = start("ep-api", {"ZEXEC_EP_HOST": "127.0.0.1", "ZEXEC_EP_PORT": str(ports["ep"])})

        # Probes as rendered: tcpSocket on the broker's client port, HTTP GETs on the APIs.
        _wait(lambda: _tcp(ports["frontend"]), "broker", broker)
        dpath = container(deployment(docs, "deploy-api"))["readinessProbe"]["httpGet"]["path"]
        epath = container(deployment(docs, "ep-api"))["readinessProbe"]["httpGet"]["path"]
        _wait(lambda: _http(f"http://127.0.0.1:{ports['deploy']}{dpath}"), "deploy-api", deploy)
        _wait(lambda: _http(f"http://127.0.0.1:{ports['ep']}{epath}"), "ep-api", ep)

        # A per-user server registers with the broker and touches its ready file (what
        # the server pod's readiness probe `test -f` checks).
        secret = env_of(container(deployment(docs, "broker")), docs)["ZEXEC_BROKER_SERVER_SECRET"]
        ready = tmp_path / "ready"
        server = start(
            "server",
            {
                "ZEXEC_SERVER_BROKER_URL": f"tcp://127.0.0.1:{ports['backend']}",
                "ZEXEC_SERVER_USER_ID": "alice",
                "ZEXEC_SERVER_CREDENTIAL": server_credential(secret.encode(), "alice"),
                "ZEXEC_SERVER_WORKERS": "1",
                "ZEXEC_SERVER_READY_FILE": str(ready),
            },
            cmd=[sys.executable, "-m", "zexec.apps.server"],
        )
        _wait(ready.exists, "server (ready file)", server)

        # The image HEALTHCHECK: right target per app (from the chart's args and env), and
        # it answers healthy for a running app, unhealthy for a closed port.
        for component, port_key in (
            ("broker", "frontend"),
            ("deploy-api", "deploy"),
            ("ep-api", "ep"),
        ):
            c = container(deployment(docs, component))
            target = hc.target_for(["zexec", *c["args"]], env_of(c, docs))
            probe = c["readinessProbe"]
            expect_port = probe.get("tcpSocket", probe.get("httpGet"))["port"]
            named = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert f":{named.get(expect_port, expect_port)}" in target
            if "httpGet" in probe:
                assert target.endswith(probe["httpGet"]["path"])
            local = re.sub(r":\d+", f":{ports[port_key]}", target, count=1)
            assert hc.probe(local), local
        assert not hc.probe(f"tcp://127.0.0.1:{_free_port()}")

        # The broker's liveness probe: its event loop answers an authenticated STATUS on
        # the control port (the probe's own command, with the test's port).
        bc = container(deployment(docs, "broker"))
        command = bc["livenessProbe"]["exec"]["command"]
        assert command[:2] == ["python", "/usr/local/bin/zexec-healthcheck"]
        target = re.sub(r":\d+$", f":{ports['control']}", command[2])
        assert target.startswith("zexec-control://127.0.0.1:")
        benv = {**base, **env_of(bc, docs)}
        script = str(ROOT / "deploy" / "docker" / "healthcheck.py")
        alive = subprocess.run([sys.executable, script, target], env=benv, timeout=60)
        assert alive.returncode == 0
        wrong = {**benv, "ZEXEC_BROKER_ADMIN_TOKEN": "not-the-token"}
        assert subprocess.run([sys.executable, script, target], env=wrong,
                              capture_output=True, timeout=60).returncode == 1
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
