"""Pure builders of the Kubernetes objects of one user's server, as plain dicts.

Plain dicts (API field names, camelCase) rather than client model objects: they are
what the API receives, they validate against the official schemas with
``kubernetes_validate`` in unit tests, and site plugins' pod overrides merge into them.

Per user, in namespace ``<prefix><user key>``: the NetworkPolicy (created first, so no
server ever runs unconfined), a Secret with the server's broker credential, a ConfigMap
per environment digest carrying ``requirements.txt`` as data, and the server Pod.

Why ``restartPolicy: Never`` and not a Deployment: a server that exits on its own after
its idle timeout must stay stopped (a Deployment would restart it for ever), a failed
install must surface as ``failed`` with its reason instead of a crash loop, and replacing
a user's environment must never run two servers for that user at once (a rolling update
would). The pod built here runs as the template of a Job (:mod:`.jobs`), whose
controller replaces it only when it is disrupted (lost node, drain, eviction); the
orchestrator replaces the Job when asked.

Requirements never appear on a command line: the install init container runs
``python -m zexec.adapters.orchestrator_k8s.install_env ... -r /etc/zexec/requirements.txt``
(exec form, no shell; uv or pip) with the file mounted from the ConfigMap.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from typing import Any
from urllib.parse import urlsplit

from zexec.adapters.orchestrator_k8s.install_step import (
    CACHE_DIR,
    install_cache_source,
    install_containers,
)
from zexec.adapters.orchestrator_k8s.resources import container_resources
from zexec.core.errors import ConfigurationError
from zexec.core.model import EnvSpec
from zexec.core.resources import resources_dict, resources_from_dict
from zexec.settings import KubernetesSettings

MANAGED_BY = {"app.kubernetes.io/managed-by": "zexec"}
LABEL_USER = "zexec.io/user"
LABEL_DIGEST = "zexec.io/env-digest"
ANN_USER_ID = "zexec.io/user-id"
ANN_ENV = "zexec.io/env"
ANN_POD = "zexec.io/pod"
#: A replacement pod built beside the current one, and its EnvSpec (see
#: :mod:`zexec.core.replacing`); promoted to ANN_POD / ANN_ENV once ready.
ANN_NEXT_POD = "zexec.io/next-pod"
ANN_NEXT_ENV = "zexec.io/next-env"
ANN_CREATED = "zexec.io/created-at"

SERVER_CONTAINER = "server"
SECRET_NAME = "zexec-server"
POLICY_NAME = "zexec-server"
CONFIG_PREFIX = "zexec-env-"
ENV_DIR = "/etc/zexec"
VENV = "/opt/zexec/venv"
READY_FILE = "/run/zexec/ready"
#: Where the install init container sees ``install_cache_volume`` (uv's cache).
UID = 1000

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


#: The server's exit code after SIGTERM (128 + 15, as a shell reports it): the server
#: Job's podFailurePolicy ignores it (a new pod), where exit 0 completes the Job.
SIGNAL_EXIT_CODE = 143


def sanitise_user(user_id: str, max_len: int) -> str:
    """``user_id`` as a DNS-1123 label of at most ``max_len`` characters. When that
    changes it (case, characters, length) an 8-hex hash of the original is appended, so
    ``Alice`` and ``alice`` get different namespaces."""
    key = re.sub(r"[^a-z0-9-]+", "-", user_id.lower()).strip("-")
    if key == user_id and len(key) <= max_len:
        return key
    digest = hashlib.sha256(user_id.encode()).hexdigest()[:8]
    key = key[: max(0, max_len - 9)].rstrip("-")
    return f"{key}-{digest}" if key else digest


def namespace_name(prefix: str, user_id: str) -> str:
    """The user's namespace: ``prefix`` + sanitised user id, at most 63 characters."""
    if not _DNS_LABEL.fullmatch(prefix.rstrip("-") or "x") or len(prefix) > 40:
        raise ConfigurationError(
            f"namespace prefix {prefix!r} must be lowercase letters, digits and '-', "
            "at most 40 characters"
        )
    return prefix + sanitise_user(user_id, 63 - len(prefix))


def parse_labels(text: str) -> dict[str, str]:
    """``"a=b,c=d"`` -> ``{"a": "b", "c": "d"}`` (the broker_pod_labels setting)."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"label {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def broker_port(url: str) -> int:
    """The TCP port of the broker backend URL (``tcp://host:port``)."""
    port = urlsplit(url).port
    if port is None:
        raise ConfigurationError(f"broker backend URL {url!r} has no port")
    return port


def server_labels(user_key: str, spec: EnvSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "zexec-server",
        "app.kubernetes.io/component": "server",
        **MANAGED_BY,
        LABEL_USER: user_key,
        LABEL_DIGEST: spec.digest[:16],
    }


def env_json(spec: EnvSpec) -> str:
    res = {} if spec.resources.default else {"resources": resources_dict(spec.resources)}
    return json.dumps(
        {"python": spec.python, "requirements": list(spec.requirements), "digest": spec.digest,
         **res})


def env_from(text: str) -> EnvSpec:
    """The EnvSpec an annotation holds (ValueError if it does not hold one)."""
    try:
        raw = json.loads(text)
        return EnvSpec(raw["python"], tuple(raw["requirements"]), raw["digest"],
                       resources_from_dict(raw.get("resources")))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not an EnvSpec annotation: {exc}") from None


def build_namespace(
    name: str, user_id: str, user_key: str, spec: EnvSpec, pod_name: str, security_level: str,
    security_version: str = "",
) -> dict[str, Any]:
    """The user's namespace; annotations keep what ``status`` needs (raw user id, the
    EnvSpec, the current pod) so the orchestrator holds no state of its own. The Pod
    Security level is enforced, audited and warned at a pinned version (``latest``
    would change the rules under running servers at a cluster upgrade)."""
    labels = server_labels(user_key, spec)
    del labels["app.kubernetes.io/component"]
    if security_level:
        for mode in ("enforce", "audit", "warn"):
            labels[f"pod-security.kubernetes.io/{mode}"] = security_level
            if security_version:
                labels[f"pod-security.kubernetes.io/{mode}-version"] = security_version
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {ANN_USER_ID: user_id, ANN_ENV: env_json(spec), ANN_POD: pod_name},
        },
    }


def build_network_policy(
    namespace: str, settings: KubernetesSettings, labels: dict[str, str]
) -> dict[str, Any]:
    """Deny all ingress; egress only to the broker pods' backend port, to the cluster
    DNS pods' port 53 (``dns_namespace``, ``dns_pod_labels``), and to
    ``extra_egress_cidrs`` (e.g. the package index the install step needs)."""
    egress: list[dict[str, Any]] = [
        {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": settings.broker_namespace}
                    },
                    "podSelector": {"matchLabels": parse_labels(settings.broker_pod_labels)},
                }
            ],
            "ports": [{"protocol": "TCP", "port": broker_port(settings.broker_backend_url)}],
        },
        # DNS only at the cluster's DNS pods: port 53 elsewhere is a tunnel out.
        {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": settings.dns_namespace}
                    },
                    "podSelector": {"matchLabels": parse_labels(settings.dns_pod_labels)},
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        },
    ]
    proxy = parse_labels(settings.package_proxy_pod_labels)
    if proxy:
        # The package index proxy, by selector and on its ports only (not an address
        # range: pod IPs change).
        egress.append(
            {
                "to": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {
                                "kubernetes.io/metadata.name": settings.package_proxy_namespace
                            }
                        },
                        "podSelector": {"matchLabels": proxy},
                    }
                ],
                "ports": _tcp_ports(settings.package_proxy_ports),
            }
        )
    cidrs = [c.strip() for c in settings.extra_egress_cidrs.split(",") if c.strip()]
    if cidrs:
        egress.append(
            {
                "to": [{"ipBlock": {"cidr": c}} for c in cidrs],
                "ports": _tcp_ports(settings.extra_egress_ports),
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY_NAME, "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [],
            "egress": egress,
        },
    }


def _tcp_ports(text: str) -> list[dict[str, Any]]:
    """``"443,80"`` -> NetworkPolicy ports; an empty list would open every port."""
    try:
        ports = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigurationError(f"ports {text!r}: expected comma-separated numbers") from None
    if not ports:
        raise ConfigurationError("an egress rule needs at least one port")
    return [{"protocol": "TCP", "port": p} for p in ports]


def config_map_name(spec: EnvSpec) -> str:
    return CONFIG_PREFIX + spec.digest[:16]


def build_config_map(namespace: str, spec: EnvSpec, labels: dict[str, str]) -> dict[str, Any]:
    """``requirements.txt`` (normalised, one per line) as data; immutable, one per digest."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name(spec), "namespace": namespace, "labels": labels},
        "immutable": True,
        "data": {
            "requirements.txt": "".join(f"{r}\n" for r in spec.requirements),
            "python": spec.python,
        },
    }


def build_secret(namespace: str, credential: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": namespace, "labels": dict(labels)},
        "type": "Opaque",
        "data": {"credential": base64.b64encode(credential.encode()).decode()},
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
        # The server writes only to its volumes (venv, /tmp, /run/zexec).
        "readOnlyRootFilesystem": True,
    }


def build_pod(
    namespace: str,
    pod_name: str,
    user_id: str,
    spec: EnvSpec,
    image: str,
    settings: KubernetesSettings,
    labels: dict[str, str],
    *,
    idle_timeout: float = 0.0,
    created_at: float = 0.0,
    overrides: list[dict[str, Any]] | tuple[dict[str, Any], ...] = (),
    pull_secrets: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The server Pod. With requirements: init container ``install`` makes a venv seeing
    the image's packages (zexec) and installs the ConfigMap's file into it (see
    :func:`install_containers`); the server runs from that venv. ``overrides`` (plugin results) are
    merged into the spec last (see :func:`merge_overrides`)."""
    # The compute part (what the user asked for, else the site's): see .resources.
    resources = container_resources(settings, spec.resources)
    common = {"image": image, "imagePullPolicy": settings.image_pull_policy}
    mounts = [
        {"name": "env", "mountPath": ENV_DIR, "readOnly": True},
        {"name": "venv", "mountPath": VENV},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    base_env = [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    python = "python"
    init: list[dict[str, Any]] = []
    if spec.requirements:
        python = f"{VENV}/bin/python"
        init = install_containers(settings, common, base_env, VENV,
                                  f"{ENV_DIR}/requirements.txt")
        for c in init:
            c.update(resources=container_resources(settings, spec.resources, gpus=False),
                     securityContext=_container_security())
            c["volumeMounts"] = list(mounts)
            if settings.install_cache_volume:
                c["volumeMounts"].append({"name": "install-cache", "mountPath": CACHE_DIR})
    server_env = base_env + [
        {"name": "ZEXEC_SERVER_BROKER_URL", "value": settings.broker_backend_url},
        {"name": "ZEXEC_SERVER_USER_ID", "value": user_id},
        {
            "name": "ZEXEC_SERVER_CREDENTIAL",
            "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": "credential"}},
        },
        {"name": "ZEXEC_SERVER_WORKERS",
         "value": str(spec.resources.workers or settings.server_workers)},
        {"name": "ZEXEC_SERVER_READY_FILE", "value": READY_FILE},
        # In its heartbeats: the Deploy API reads readiness from the broker by it.
        {"name": "ZEXEC_SERVER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "ZEXEC_SERVER_IDLE_TIMEOUT", "value": f"{idle_timeout:g}"},
        # A stop by SIGTERM (drain, eviction, preemption) is not an idle exit: see jobs.py.
        {"name": "ZEXEC_SERVER_SIGNAL_EXIT_CODE", "value": str(SIGNAL_EXIT_CODE)},
    ]
    server = {
        "name": SERVER_CONTAINER,
        **common,
        "command": [python, "-m", "zexec.apps.server"],
        "env": server_env,
        "resources": resources,
        "securityContext": _container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "readinessProbe": {
            "exec": {"command": ["test", "-f", READY_FILE]},
            # Every second (the least Kubernetes allows): the probe is a stat, and each
            # period is time a user waits for a server that is already registered.
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
        "volumeMounts": [*mounts, {"name": "run", "mountPath": "/run/zexec"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no env vars describing the cluster's services
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": init,
        "containers": [server],
        # A lost node's pod is evicted after this long (then its Job makes a new one)
        # instead of Kubernetes' default 300 s.
        "tolerations": [
            {"key": f"node.kubernetes.io/{taint}", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": settings.lost_node_seconds}
            for taint in ("unreachable", "not-ready")
        ],
        "volumes": [
            {"name": "env", "configMap": {"name": config_map_name(spec)}},
            {"name": "venv", "emptyDir": {"sizeLimit": settings.venv_size_limit}},
            {"name": "tmp", "emptyDir": {"sizeLimit": settings.tmp_size_limit}},
            {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ],
    }
    if init and settings.install_cache_volume:
        pod_spec["volumes"].append({"name": "install-cache", **install_cache_source(settings)})
    if not init:
        del pod_spec["initContainers"]
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in pull_secrets]
    for override in overrides:
        pod_spec = merge_overrides(pod_spec, override)
    _quantities_as_strings(pod_spec)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": {
                ANN_USER_ID: user_id,
                LABEL_DIGEST: spec.digest,
                ANN_CREATED: f"{created_at:.3f}",
            },
        },
        "spec": pod_spec,
    }


def _quantities_as_strings(pod_spec: dict[str, Any]) -> None:
    """``{"nvidia.com/gpu": 1}`` -> ``"1"``: the API accepts both, but the official
    client's request validation takes strings only, and plugins write numbers."""
    for c in pod_spec.get("initContainers", []) + pod_spec.get("containers", []):
        for kind in ("requests", "limits"):
            values = (c.get("resources") or {}).get(kind) or {}
            for key, value in values.items():
                values[key] = str(value)


def merge_overrides(base: Any, override: Any) -> Any:
    """``override`` merged into a copy of ``base``: dicts key by key; lists of objects
    that all have a ``name`` by name; other lists of objects appended; anything else
    (scalars, lists of scalars) replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge_overrides(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(override, list):
        items = base + override
        if items and all(isinstance(x, dict) for x in items):
            if all("name" in x for x in items):
                out_list = list(base)
                where = {x["name"]: i for i, x in enumerate(out_list)}
                for x in override:
                    if x["name"] in where:
                        out_list[where[x["name"]]] = merge_overrides(out_list[where[x["name"]]], x)
                    else:
                        where[x["name"]] = len(out_list)
                        out_list.append(copy.deepcopy(x))
                return out_list
            return base + copy.deepcopy(override)
    return copy.deepcopy(override)
