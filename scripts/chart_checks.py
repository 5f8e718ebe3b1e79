#!/usr/bin/env python3
"""Checks of rendered Kubernetes manifests (``helm template`` output), offline.

1. Schema: every document is validated with ``kubernetes-validate --strict`` against a
   named Kubernetes version (misspelled or misplaced fields fail).
2. Policy, the chart's promises:
   - the only ClusterRoles are the Deploy API's two: its cluster-scope one (namespaces,
     and binding the per-user role) and the per-user one (bound only by RoleBindings in
     user namespaces); their rules are exactly the ones the chart README documents
     (tables between the ``clusterrole-rules`` and ``userrole-rules`` markers);
     ClusterRoleBindings bind only the first; ``bind`` only on the per-user role, by
     name; no wildcard in any Role;
   - every container has cpu/memory requests and limits, readiness and liveness probes,
     and cannot run as root (runAsNonRoot, a non-zero runAsUser, no privilege escalation,
     read-only root filesystem, all capabilities dropped); no host namespaces/paths;
   - no pod but the Deploy API mounts a service-account token;
   - the broker's backend and control ports are never exposed outside the cluster;
   - with NetworkPolicies on, every control-plane pod is selected by one.

Usage: chart_checks.py [--kube-version 1.31.0] [--readme CHART/README.md] FILE...
(FILE may be ``-`` for stdin). Exit status 1 and one line per problem on failure.
Also imported by tests/integration/test_helm_chart.py.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

DEFAULT_KUBE_VERSION = "1.31.0"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
#: The only component whose pods may mount a service-account token.
TOKEN_COMPONENT = "deploy-api"
#: Broker ports that must stay inside the cluster.
INTERNAL_PORT_NAMES = {"backend", "control"}

Rule = tuple[str, str, str]  # (api group, resource, verb)


def load_documents(text: str) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a multi-document stream."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [d for d in yaml.load_all(text, Loader=loader) if d]


def describe(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


# ---------------------------------------------------------------------------- schema


def schema_errors(
    docs: Iterable[dict[str, Any]], kube_version: str = DEFAULT_KUBE_VERSION
) -> list[str]:
    """Strict OpenAPI-schema validation of every document (kubernetes-validate)."""
    import kubernetes_validate
    from kubernetes_validate import utils
    from kubernetes_validate.utils import SchemaNotFoundError

    # kubernetes-validate re-reads (and re-parses) the multi-megabyte _definitions.json
    # for every document; memoise the file loader in this process (read-only use).
    if not hasattr(utils.schema_contents, "cache_info"):
        utils.schema_contents = functools.lru_cache(maxsize=64)(utils.schema_contents)

    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            errors.append(
                f"{describe(doc)}: invalid for Kubernetes {kube_version} at {where}: {exc.message}"
            )
        except SchemaNotFoundError as exc:
            errors.append(f"{describe(doc)}: {exc.message}")
    return errors


# ---------------------------------------------------------------------------- RBAC


#: README marker of each of the Deploy API's ClusterRoles, by name suffix.
ROLE_TABLES = {"-deploy-api": "clusterrole-rules", "-deploy-api-user": "userrole-rules"}
#: Kinds without a namespace: never in the per-user role (it is bound per namespace).
CLUSTER_SCOPED = {"namespaces", "nodes", "persistentvolumes", "clusterroles",
                  "clusterrolebindings", "customresourcedefinitions", "storageclasses"}


def documented_cluster_rules(readme: Path, marker: str = "clusterrole-rules") -> set[Rule]:
    """The rules of one ClusterRole the chart README documents, as (group, resource, verb).

    Reads the markdown table between ``<!-- {marker}:begin -->`` and
    ``<!-- {marker}:end -->``: columns API group (``core`` for ""), resources
    and verbs (each a comma-separated list of `backticked` names), why.
    """
    text = readme.read_text()
    m = re.search(rf"<!-- {marker}:begin -->(.*?)<!-- {marker}:end -->", text, re.S)
    if not m:
        raise ValueError(f"{readme}: no {marker} table")
    rules: set[Rule] = set()
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[1].startswith("`"):
            continue  # header, separator or prose
        group = cells[0].strip("`")
        group = "" if group == "core" else group
        resources = re.findall(r"`([^`]+)`", cells[1])
        verbs = re.findall(r"`([^`]+)`", cells[2])
        for r in resources:
            for v in verbs:
                rules.add((group, r, v))
    if not rules:
        raise ValueError(f"{readme}: the {marker} table is empty")
    return rules


def documented_roles(readme: Path) -> dict[str, set[Rule]]:
    """Name suffix -> documented rules, for each of the Deploy API's ClusterRoles."""
    return {suffix: documented_cluster_rules(readme, marker)
            for suffix, marker in ROLE_TABLES.items()}


def expand_rules(rules: Iterable[dict[str, Any]]) -> set[Rule]:
    out: set[Rule] = set()
    for rule in rules or ():
        for g in rule.get("apiGroups") or [""]:
            for r in rule.get("resources") or ():
                for v in rule.get("verbs") or ():
                    out.add((g, r, v))
    return out


def rbac_allows(rules: Iterable[dict[str, Any]], verb: str, group: str, resource: str) -> bool:
    """Whether RBAC ``rules`` allow ``verb`` on ``group``/``resource`` (for orchestrator
    tests: every request the orchestrator makes must be allowed by the chart)."""
    for rule in rules or ():
        if (
            ({"*", group} & set(rule.get("apiGroups") or [""]))
            and ({"*", resource} & set(rule.get("resources") or ()))
            and ({"*", verb} & set(rule.get("verbs") or ()))
            and not rule.get("resourceNames")
        ):
            return True
    return False


def _role_kind(name: str) -> str | None:
    """The ROLE_TABLES suffix ``name`` ends with (the longest), or None."""
    found = [s for s in ROLE_TABLES if name.endswith(s)]
    return max(found, key=len) if found else None


def rbac_errors(docs: list[dict[str, Any]],
                documented: dict[str, set[Rule]] | None) -> list[str]:
    errors = []
    cluster_roles = [d for d in docs if d["kind"] == "ClusterRole"]
    by_kind: dict[str, str] = {}
    for role in cluster_roles:
        name = role["metadata"]["name"]
        kind = _role_kind(name)
        if kind is None or kind in by_kind:
            errors.append(f"unexpected ClusterRole/{name}: only the Deploy API's two are documented")
            continue
        by_kind[kind] = name
        if role.get("aggregationRule"):
            errors.append(f"ClusterRole/{name}: aggregationRule not allowed")
        for rule in role.get("rules") or ():
            if rule.get("nonResourceURLs"):
                errors.append(f"ClusterRole/{name}: nonResourceURLs not allowed")
        granted = expand_rules(role.get("rules"))
        if documented is not None and granted != documented[kind]:
            extra = sorted(granted - documented[kind])
            missing = sorted(documented[kind] - granted)
            if extra:
                errors.append(f"ClusterRole/{name}: grants undocumented {extra}")
            if missing:
                errors.append(f"ClusterRole/{name}: README documents {missing}, not granted")
        if kind == "-deploy-api-user":
            for g, r, _v in granted:
                if r.split("/")[0] in CLUSTER_SCOPED or g == "rbac.authorization.k8s.io":
                    errors.append(f"ClusterRole/{name}: the per-user role grants {g}/{r}")
    user_role = by_kind.get("-deploy-api-user")
    for kind in ("ClusterRole", "Role"):
        for role in (d for d in docs if d["kind"] == kind):
            for rule in role.get("rules") or ():
                for g, r, v in expand_rules([rule]):
                    if "*" in (g, r, v):
                        errors.append(f"{describe(role)}: wildcard in rule ({g!r}, {r!r}, {v!r})")
                    if v in ("escalate", "impersonate") or (v == "bind" and not (
                        (g, r) == ("rbac.authorization.k8s.io", "clusterroles")
                        and user_role and rule.get("resourceNames") == [user_role]
                    )):
                        errors.append(f"{describe(role)}: privilege-escalation verb {v!r}")
    for binding in (d for d in docs if d["kind"] == "ClusterRoleBinding"):
        ref = binding.get("roleRef") or {}
        if ref.get("kind") != "ClusterRole" or ref.get("name") != by_kind.get("-deploy-api"):
            errors.append(
                f"{describe(binding)}: binds {ref.get('kind')}/{ref.get('name')}, not the chart's "
                "cluster-scope ClusterRole"
            )
        for subj in binding.get("subjects") or ():
            if subj.get("kind") != "ServiceAccount":
                errors.append(
                    f"{describe(binding)}: subject {subj.get('kind')}/{subj.get('name')} is not a ServiceAccount"
                )
    return errors


# ---------------------------------------------------------------------------- pods


def pod_specs(
    docs: Iterable[dict[str, Any]],
) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(workload document, pod template metadata, pod spec) of every workload."""
    for doc in docs:
        kind = doc.get("kind")
        if kind not in WORKLOAD_KINDS:
            continue
        if kind == "Pod":
            yield doc, doc.get("metadata") or {}, doc.get("spec") or {}
            continue
        spec = doc.get("spec") or {}
        if kind == "CronJob":
            spec = (spec.get("jobTemplate") or {}).get("spec") or {}
        template = spec.get("template") or {}
        yield doc, template.get("metadata") or {}, template.get("spec") or {}


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers") or ()
    yield from pod.get("containers") or ()


def pod_errors(docs: list[dict[str, Any]]) -> list[str]:
    errors = []
    for doc, meta, pod in pod_specs(docs):
        where = describe(doc)
        component = (meta.get("labels") or {}).get("app.kubernetes.io/component", "")
        if component != TOKEN_COMPONENT and pod.get("automountServiceAccountToken") is not False:
            errors.append(f"{where}: automountServiceAccountToken must be false")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                errors.append(f"{where}: {flag} not allowed")
        for vol in pod.get("volumes") or ():
            if "hostPath" in vol:
                errors.append(f"{where}: hostPath volume {vol.get('name')} not allowed")
        psc = pod.get("securityContext") or {}
        if psc.get("runAsUser") == 0 or psc.get("runAsGroup") == 0:
            errors.append(f"{where}: pod securityContext runs as root")
        for c in containers(pod):
            cw = f"{where} container {c.get('name')}"
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if not (res.get(part) or {}).get(r):
                        errors.append(f"{cw}: no resources.{part}.{r}")
            if c in (pod.get("containers") or ()):
                for probe in ("readinessProbe", "livenessProbe"):
                    if not c.get(probe):
                        errors.append(f"{cw}: no {probe}")
            sc = c.get("securityContext") or {}
            non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            if non_root is not True:
                errors.append(f"{cw}: runAsNonRoot is not true")
            if uid is None or uid == 0:
                errors.append(f"{cw}: runAsUser must be set and non-zero (got {uid})")
            if sc.get("privileged"):
                errors.append(f"{cw}: privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{cw}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{cw}: readOnlyRootFilesystem is not true")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or ()):
                errors.append(f"{cw}: capabilities.drop does not contain ALL")
            if caps.get("add"):
                errors.append(f"{cw}: adds capabilities {caps['add']}")
    return errors


# ---------------------------------------------------------------------------- network


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    want = selector.get("matchLabels") or {}
    if selector.get("matchExpressions"):
        return False  # not needed by this chart; be conservative
    return all(labels.get(k) == v for k, v in want.items())


def network_errors(docs: list[dict[str, Any]]) -> list[str]:
    errors = []
    for svc in (d for d in docs if d["kind"] == "Service"):
        if (svc.get("spec") or {}).get("type", "ClusterIP") == "ClusterIP":
            continue
        for port in svc["spec"].get("ports") or ():
            names = {str(port.get("name")), str(port.get("targetPort"))}
            if names & INTERNAL_PORT_NAMES:
                errors.append(f"{describe(svc)}: exposes internal port {port} outside the cluster")
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if policies:
        for doc, meta, _pod in pod_specs(docs):
            labels = meta.get("labels") or {}
            if not any(_selects(p["spec"].get("podSelector") or {}, labels) for p in policies):
                errors.append(f"{describe(doc)}: pods selected by no NetworkPolicy")
    return errors


# ---------------------------------------------------------------------------- all


def policy_errors(docs: list[dict[str, Any]], readme: Path | None = None) -> list[str]:
    try:
        documented = documented_roles(readme) if readme else None
    except (OSError, ValueError) as exc:
        return [str(exc)]
    errors = []
    for doc in docs:
        if (
            not doc.get("apiVersion")
            or not doc.get("kind")
            or not (doc.get("metadata") or {}).get("name")
        ):
            errors.append(f"{describe(doc)}: missing apiVersion, kind or metadata.name")
    if errors:
        return errors
    return rbac_errors(docs, documented) + pod_errors(docs) + network_errors(docs)


def check(
    text: str, kube_version: str = DEFAULT_KUBE_VERSION, readme: Path | None = None
) -> list[str]:
    """Every problem with one rendered manifest stream (empty list = fine)."""
    try:
        docs = load_documents(text)
    except yaml.YAMLError as exc:
        return [f"not valid YAML: {exc}"]
    if not docs:
        return ["no documents"]
    return schema_errors(docs, kube_version) + policy_errors(docs, readme)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kube-version", default=DEFAULT_KUBE_VERSION)
    ap.add_argument("--readme", type=Path, help="chart README documenting the ClusterRole rules")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    failed = False
    for name in args.files:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
        problems = check(text, args.kube_version, args.readme)
        if problems:
            failed = True
            for p in problems:
                print(f"{name}: {p}")
        else:
            print(
                f"{name}: OK ({len(load_documents(text))} documents, Kubernetes {args.kube_version})"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
