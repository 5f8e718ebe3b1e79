"""Helpers for testing the Helm chart offline (deploy/helm/zexec).

- :func:`ensure_tools` fetches the pinned helm/kubectl into ``.tools/`` (once);
- :func:`helm_template` renders the chart (raises :class:`HelmError` on failure);
- :data:`checks` is ``scripts/chart_checks.py`` (schema + policy checks), imported;
- :func:`server_workload_errors` checks that the per-user objects the Kubernetes
  orchestrator creates agree with the chart (namespace prefix, labels the broker's
  NetworkPolicy admits, broker URL and port, image, resources, secret names);
  :func:`request_errors` that every API request it makes is allowed by the chart's
  ClusterRole and admission policy.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "zexec"
TOOLS = ROOT / ".tools"
KUBE_VERSION = "1.31.0"
RELEASE = NAMESPACE = "zexec"


def _load_checks():
    spec = importlib.util.spec_from_file_location(
        "chart_checks", ROOT / "scripts" / "chart_checks.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("chart_checks", mod)
    spec.loader.exec_module(mod)
    return mod


checks = _load_checks()


class HelmError(RuntimeError):
    pass


def ensure_tools() -> Path:
    """The bin directory with helm and kubectl (fetched by scripts/k8s-tools.sh)."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "k8s-tools.sh"), str(TOOLS)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"scripts/k8s-tools.sh failed:\n{out.stderr}")
    return Path(out.stdout.strip().splitlines()[-1])


def helm_env() -> dict[str, str]:
    env = dict(os.environ)
    for var, sub in (
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_DATA_HOME", "data"),
    ):
        env[var] = str(TOOLS / "helm" / sub)
    env["KUBECONFIG"] = os.devnull  # never talk to a cluster
    return env


def helm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(TOOLS / "bin" / "helm"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=helm_env(),
    )


def helm_template(
    chart: Path = CHART, values: list[Path] = (), sets: list[str] = (), show_only: str | None = None
) -> str:
    args = [
        "template",
        RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:
        args += ["--set", s]
    if show_only:
        args += ["--show-only", show_only]
    out = helm(*args)
    if out.returncode != 0:
        raise HelmError(out.stderr)
    return out.stdout


def render_docs(**kw) -> list[dict[str, Any]]:
    return checks.load_documents(helm_template(**kw))


def render_notes(tmp: Path, chart: Path = CHART, sets: list[str] = ()) -> str:
    """NOTES.txt as `helm install` would print it. `helm install --dry-run` needs a
    cluster, so a copy of the chart renders NOTES.txt through `tpl` into a document."""
    import shutil

    import yaml

    copy = tmp / "notes-chart"
    shutil.copytree(chart, copy)
    shutil.copy(copy / "templates" / "NOTES.txt", copy / "notes.txt")
    (copy / "templates" / "zz-notes.yaml").write_text(
        'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n'
    )
    text = helm_template(copy, sets=sets, show_only="templates/zz-notes.yaml")
    return yaml.safe_load(text.split("---", 1)[1])["notes"]


# --------------------------------------------------------------------------- lookups


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {[describe(d) for d in found]}"
    return found[0]


def describe(doc: dict[str, Any]) -> str:
    return checks.describe(doc)


def container(doc: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]["containers"][index]


def env_of(c: dict[str, Any], docs: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """A container's environment; secretKeyRefs resolved from rendered Secrets in ``docs``
    (an unresolvable reference maps to ``"<secret name/key>"``)."""
    out = {}
    for e in c.get("env") or ():
        if "value" in e:
            out[e["name"]] = e["value"]
            continue
        ref = (e.get("valueFrom") or {}).get("secretKeyRef") or {}
        value = f"<secret {ref.get('name')}/{ref.get('key')}>"
        for s in find(docs or [], "Secret", ref.get("name")):
            if ref.get("key") in (s.get("data") or {}):
                value = base64.b64decode(s["data"][ref["key"]]).decode()
        out[e["name"]] = value
    return out


def deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    found = [
        d
        for d in find(docs, "Deployment")
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        == component
    ]
    assert len(found) == 1, f"expected one {component} Deployment"
    return found[0]


def settings_env_names() -> dict[str, set[str]]:
    """Environment variable names each zexec settings class reads, by prefix."""
    from pydantic_settings import BaseSettings

    import zexec.settings as zs

    names: dict[str, set[str]] = {}
    for obj in vars(zs).values():
        if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings:
            prefix = obj.model_config.get("env_prefix", "")
            names.setdefault(prefix, set()).update(prefix + f.upper() for f in obj.model_fields)
    return names


# --------------------------------------------------------------------------- orchestrator


#: Labels every server pod carries (the broker's NetworkPolicy admits these).
SERVER_LABELS = {"app.kubernetes.io/name": "zexec-server", "app.kubernetes.io/component": "server"}


def _pod_of(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    if obj["kind"] == "Pod":
        return obj.get("metadata") or {}, obj.get("spec") or {}
    if obj["kind"] in ("Deployment", "Job"):
        t = obj["spec"]["template"]
        return t.get("metadata") or {}, t.get("spec") or {}
    return None


def server_workload_errors(
    objects: list[dict[str, Any]],
    chart_docs: list[dict[str, Any]],
    image: str | None = None,
    python: str | None = None,
) -> list[str]:
    """Where the per-user ``objects`` (Namespace, Pod or Deployment, ConfigMap, Secret,
    NetworkPolicy, as the Kubernetes orchestrator creates them for one user) disagree
    with what the chart (``chart_docs``, rendered) sets up and permits.

    ``image``: the expected server image (default: ZEXEC_K8S_SERVER_IMAGE with
    ``{python}`` replaced by ``python``; skipped when neither is given)."""
    errors: list[str] = []
    deploy = deployment(chart_docs, "deploy-api")
    denv = env_of(container(deploy), chart_docs)
    prefix = denv["ZEXEC_K8S_NAMESPACE_PREFIX"]
    backend_url = denv["ZEXEC_K8S_BROKER_BACKEND_URL"]
    broker_ns = denv["ZEXEC_K8S_BROKER_NAMESPACE"]
    broker_labels = dict(kv.split("=", 1) for kv in denv["ZEXEC_K8S_BROKER_POD_LABELS"].split(","))
    backend_port = int(backend_url.rsplit(":", 1)[1])
    if image is None and python is not None:
        image = denv["ZEXEC_K8S_SERVER_IMAGE"].replace("{python}", python)
    # What the Deploy API may create: cluster-wide, or in the user namespace through the
    # RoleBinding of the per-user role.
    rules = [rule for role in find(chart_docs, "ClusterRole") for rule in role["rules"]]

    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    if len(namespaces) != 1:
        return [f"expected one Namespace, got {len(namespaces)}"]
    ns = namespaces[0]["metadata"]["name"]
    if not ns.startswith(prefix):
        errors.append(f"namespace {ns!r} does not start with ZEXEC_K8S_NAMESPACE_PREFIX {prefix!r}")
    ns_labels = namespaces[0]["metadata"].get("labels") or {}
    if ns_labels.get("pod-security.kubernetes.io/enforce") != "restricted":
        errors.append(
            "user namespace lacks label pod-security.kubernetes.io/enforce=restricted "
            "(the chart's admission policy denies creating it)"
        )

    api = {
        "Namespace": ("", "namespaces"),
        "Pod": ("", "pods"),
        "ConfigMap": ("", "configmaps"),
        "Secret": ("", "secrets"),
        "Deployment": ("apps", "deployments"),
        "Job": ("batch", "jobs"),
        "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
        "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings"),
        "ResourceQuota": ("", "resourcequotas"),
        "LimitRange": ("", "limitranges"),
    }
    for o in objects:
        kind = o["kind"]
        if kind not in api or not checks.rbac_allows(rules, "create", *api[kind]):
            errors.append(f"the chart's ClusterRoles do not allow creating {kind}")
        if kind != "Namespace" and o["metadata"].get("namespace") not in (None, ns):
            errors.append(
                f"{describe(o)} is in namespace {o['metadata'].get('namespace')!r}, not {ns!r}"
            )

    pods = [p for p in (_pod_of(o) for o in objects) if p]
    if len(pods) != 1:
        errors.append(f"expected one server Pod, Job or Deployment, got {len(pods)}")
        return errors
    meta, spec = pods[0]
    labels = meta.get("labels") or {}
    for k, v in SERVER_LABELS.items():
        if labels.get(k) != v:
            errors.append(
                f"server pod label {k}={labels.get(k)!r}, the broker NetworkPolicy admits {v!r}"
            )
    if not labels.get("zexec.io/user"):
        errors.append("server pod lacks label zexec.io/user")
    if not re.fullmatch(r"[0-9a-f]{16}", labels.get("zexec.io/env-digest", "")):
        errors.append("server pod label zexec.io/env-digest is not 16 hex digits")
    if spec.get("automountServiceAccountToken") is not False:
        errors.append("server pod must set automountServiceAccountToken: false")

    # Same container hardening as the control plane (read-only root included), except
    # that a server needs no liveness probe.
    fake = {"kind": "Pod", "metadata": {"name": "server", "labels": labels}, "spec": spec}
    for e in checks.pod_errors([fake]):
        if "livenessProbe" in e or "automountServiceAccountToken" in e:
            continue
        errors.append(e)

    c = spec["containers"][0]
    if image and c.get("image") != image:
        errors.append(f"server image {c.get('image')!r}, expected {image!r}")
    senv = {e["name"]: e for e in c.get("env") or ()}
    server_names = settings_env_names()["ZEXEC_SERVER_"]
    for name in senv:
        if name.startswith("ZEXEC_SERVER_") and name not in server_names:
            errors.append(f"server env {name} is not a ServerSettings field")
    url = (senv.get("ZEXEC_SERVER_BROKER_URL") or {}).get("value")
    if url != backend_url:
        errors.append(
            f"ZEXEC_SERVER_BROKER_URL {url!r} != chart's broker backend URL {backend_url!r}"
        )
    cred = (senv.get("ZEXEC_SERVER_CREDENTIAL") or {}).get("valueFrom", {}).get("secretKeyRef")
    if not cred:
        errors.append("ZEXEC_SERVER_CREDENTIAL must come from a Secret (secretKeyRef)")
    elif not any(
        o["kind"] == "Secret" and o["metadata"]["name"] == cred.get("name") for o in objects
    ):
        errors.append(
            f"ZEXEC_SERVER_CREDENTIAL refers to Secret {cred.get('name')!r}, not created in {ns}"
        )
    ready = (senv.get("ZEXEC_SERVER_READY_FILE") or {}).get("value")
    probe = ((c.get("readinessProbe") or {}).get("exec") or {}).get("command") or []
    if not ready or ready not in probe or "test" not in " ".join(probe):
        errors.append(f"readinessProbe {probe} does not test ZEXEC_SERVER_READY_FILE {ready!r}")
    res = c.get("resources") or {}
    for key, path in (
        ("ZEXEC_K8S_CPU_REQUEST", ("requests", "cpu")),
        ("ZEXEC_K8S_CPU_LIMIT", ("limits", "cpu")),
        ("ZEXEC_K8S_MEMORY_REQUEST", ("requests", "memory")),
        ("ZEXEC_K8S_MEMORY_LIMIT", ("limits", "memory")),
    ):
        got = str((res.get(path[0]) or {}).get(path[1]))
        if got != denv[key]:
            errors.append(
                f"server resources.{'.'.join(path)} {got!r} != chart's {key} {denv[key]!r}"
            )

    # The server's NetworkPolicy lets it reach the broker backend (namespace + pod labels).
    reach = False
    for np_ in (o for o in objects if o["kind"] == "NetworkPolicy"):
        for rule in np_["spec"].get("egress") or ():
            ports = {p.get("port") for p in rule.get("ports") or ()}
            for peer in rule.get("to") or ():
                nsel = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
                psel = (peer.get("podSelector") or {}).get("matchLabels") or {}
                if (
                    nsel.get("kubernetes.io/metadata.name") == broker_ns
                    and psel
                    and all(broker_labels.get(k) == v for k, v in psel.items())
                    and backend_port in ports
                ):
                    reach = True
    if not reach:
        errors.append(
            f"no NetworkPolicy egress rule reaches the broker ({broker_ns}, {broker_labels}, port {backend_port})"
        )
    # DNS only at the cluster DNS pods the chart names; no rule open to every address.
    dns_ns = denv["ZEXEC_K8S_DNS_NAMESPACE"]
    dns_labels = dict(kv.split("=", 1) for kv in denv["ZEXEC_K8S_DNS_POD_LABELS"].split(","))
    for np_ in (o for o in objects if o["kind"] == "NetworkPolicy"):
        for rule in np_["spec"].get("egress") or ():
            if not rule.get("ports"):
                errors.append(f"{describe(np_)}: an egress rule open on every port: {rule}")
            if not rule.get("to"):
                errors.append(f"{describe(np_)}: an egress rule open to every address: {rule}")
            elif 53 in {p.get("port") for p in rule.get("ports") or ()} and not all(
                ((peer.get("namespaceSelector") or {}).get("matchLabels") or {})
                == {"kubernetes.io/metadata.name": dns_ns}
                and ((peer.get("podSelector") or {}).get("matchLabels") or {}) == dns_labels
                for peer in rule["to"]
            ):
                errors.append(f"{describe(np_)}: DNS reaches more than the cluster DNS pods "
                              f"({dns_ns}, {dns_labels}): {rule['to']}")
    # The broker admits registrations only from namespaces its policy selects: the user
    # namespace must be one of them.
    for policy in find(chart_docs, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress") or ():
            if backend_port not in {p.get("port") for p in rule.get("ports") or ()}:
                continue
            for peer in rule.get("from") or ():
                nsel = peer.get("namespaceSelector")
                if nsel is None or not checks._selects(nsel, ns_labels):
                    errors.append(f"the broker NetworkPolicy's namespaceSelector {nsel} does "
                                  f"not select the user namespace {ns} ({ns_labels})")
    return errors


def _roles(chart_docs: list[dict[str, Any]]) -> tuple[list, list, str]:
    """(cluster-scope rules, per-user rules, per-user role name) of the chart."""
    cluster, user, user_name = [], [], ""
    for role in find(chart_docs, "ClusterRole"):
        if role["metadata"]["name"].endswith("-deploy-api-user"):
            user, user_name = role["rules"], role["metadata"]["name"]
        else:
            cluster = role["rules"]
    return cluster, user, user_name


def request_errors(requests: list[Any], chart_docs: list[dict[str, Any]]) -> list[str]:
    """Which of the API ``requests`` (recorded by the kmock emulator: method, resource,
    namespace, name, subresource, data) the chart would refuse: not allowed by its
    cluster-scope ClusterRole, nor by the per-user one in a namespace where an earlier
    request created its RoleBinding; or denied by its ValidatingAdmissionPolicy (writes
    outside namespaces named with the prefix; a user namespace without its Pod Security
    label; a RoleBinding of another role or subject)."""
    errors = []
    cluster_rules, user_rules, user_role = _roles(chart_docs)
    denv = env_of(container(deployment(chart_docs, "deploy-api")), chart_docs)
    prefix = denv["ZEXEC_K8S_NAMESPACE_PREFIX"]
    level = denv.get("ZEXEC_K8S_POD_SECURITY_LEVEL", "")
    sa_ns, _, sa_name = denv.get("ZEXEC_K8S_SERVICE_ACCOUNT", "").partition(":")
    bound: set[str] = set()
    for r in requests:
        method = str(r.method).rsplit(".", 1)[-1].upper()
        res = r.resource
        if res is None:
            continue  # discovery, /version ...
        body = r.data if isinstance(getattr(r, "data", None), dict) else {}
        name = r.name or ((body.get("metadata") or {}).get("name"))
        params = dict(r.params or {})
        verb = {
            "GET": "watch"
            if params.get("watch") in ("true", "1", True)
            else ("get" if r.name else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if r.name else "deletecollection",
        }.get(method, method.lower())
        resource = res.plural + (f"/{r.subresource}" if r.subresource else "")
        what = f"{verb} {res.group or 'core'}/{resource} {r.namespace or ''}/{name or ''}"
        allowed = checks.rbac_allows(cluster_rules, verb, res.group, resource) or (
            r.namespace in bound and checks.rbac_allows(user_rules, verb, res.group, resource)
        )
        if not allowed:
            errors.append(f"RBAC denies: {what}")
        if (res.group, res.plural, method) == ("rbac.authorization.k8s.io", "rolebindings", "POST"):
            ref = body.get("roleRef") or {}
            may_bind = any(
                "bind" in rule.get("verbs", ()) and "clusterroles" in rule.get("resources", ())
                and ref.get("name") in (rule.get("resourceNames") or ())
                for rule in cluster_rules
            )
            if not may_bind:
                errors.append(f"RBAC denies binding {ref.get('kind')}/{ref.get('name')}: {what}")
            subjects = body.get("subjects") or []
            if ref.get("name") != user_role or subjects != [
                {"kind": "ServiceAccount", "name": sa_name, "namespace": sa_ns}
            ]:
                errors.append(f"admission policy denies (role binding {ref}, {subjects}): {what}")
            if allowed and may_bind:
                bound.add(r.namespace)
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            if res.group == "" and res.plural == "namespaces":
                if not (name or "").startswith(prefix):
                    errors.append(f"admission policy denies (namespace name): {what}")
                labels = (body.get("metadata") or {}).get("labels") or {}
                if (
                    level
                    and method == "POST"
                    and labels.get("pod-security.kubernetes.io/enforce") != level
                ):
                    errors.append(
                        f"admission policy denies (no Pod Security label {level}): {what}"
                    )
            elif not (r.namespace or "").startswith(prefix):
                errors.append(f"admission policy denies (outside {prefix}*): {what}")
    return errors
