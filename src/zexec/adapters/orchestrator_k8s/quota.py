"""Bounds on one user's namespace: a ResourceQuota (what all its pods together may
request and use) and a LimitRange (the most one container may ask for), from
``ZEXEC_K8S_RESOURCE_QUOTA`` and ``ZEXEC_K8S_LIMIT_RANGE_MAX`` (``k=v,...``; empty =
none). They hold whatever a site plugin's pod overrides ask for, so one user cannot take
a node's worth of resources by accident or through a bug.

Made right after the RoleBinding, before any pod; on a later spawn they are patched to
the current settings. :func:`check_bounds` refuses, at start, bounds that could not hold
one server at the site's resource maxima (``ZEXEC_DEPLOY_MAX_*``).
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from zexec.adapters.orchestrator_k8s.manifests import parse_labels
from zexec.core.errors import ConfigurationError
from zexec.core.resources import ResourceLimits, cpu_cores, memory_mib
from zexec.settings import KubernetesSettings

NAME = "zexec-server"


def build_resource_quota(namespace: str, hard: str, labels: dict[str, str]) -> dict[str, Any] | None:
    values = parse_labels(hard)
    if not values:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": NAME, "namespace": namespace, "labels": dict(labels)},
        "spec": {"hard": values},
    }


def build_limit_range(namespace: str, maximum: str, labels: dict[str, str]) -> dict[str, Any] | None:
    values = parse_labels(maximum)
    if not values:
        return None
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": NAME, "namespace": namespace, "labels": dict(labels)},
        "spec": {"limits": [{"type": "Container", "max": values}]},
    }


def apply(core_api: Any, namespace: str, settings: KubernetesSettings,
          labels: dict[str, str]) -> None:
    """Create the quota and limit range (patch them when they exist)."""
    pairs = (
        (build_resource_quota(namespace, settings.resource_quota, labels),
         core_api.create_namespaced_resource_quota, core_api.patch_namespaced_resource_quota),
        (build_limit_range(namespace, settings.limit_range_max, labels),
         core_api.create_namespaced_limit_range, core_api.patch_namespaced_limit_range),
    )
    for body, create, patch in pairs:
        if body is None:
            continue
        try:
            create(namespace, body, _preload_content=False)
        except ApiException as e:
            if e.status != 409:
                raise
            patch(NAME, namespace, body, _preload_content=False)


def _shortfall(values: dict[str, str], keys: tuple[str, ...], want: float,
               parse: Any) -> tuple[str, str] | None:
    for key in keys:
        if key in values:
            try:
                have = parse(values[key])
            except ValueError:
                raise ConfigurationError(f"{key}={values[key]!r} is not a quantity") from None
            if have < want:
                return key, values[key]
    return None


def check_bounds(settings: KubernetesSettings, limits: ResourceLimits) -> None:
    """ConfigurationError (at start) when the LimitRange ``max`` of one container or the
    ResourceQuota ``hard`` of a namespace cannot hold one server at the site's maxima
    (``ZEXEC_DEPLOY_MAX_*``): such a spawn would pass the Deploy API's check and then
    be refused by Kubernetes, a failure the user cannot act on."""
    gpu = settings.gpu_resource
    wants = (
        ("cpus", "ZEXEC_DEPLOY_MAX_CPUS", limits.max_cpus, cpu_cores,
         ("cpu",), ("cpu", "requests.cpu", "limits.cpu")),
        ("memory", "ZEXEC_DEPLOY_MAX_MEMORY", limits.max_memory, memory_mib,
         ("memory",), ("memory", "requests.memory", "limits.memory")),
        ("gpus", "ZEXEC_DEPLOY_MAX_GPUS", limits.max_gpus, float,
         (gpu,), (f"requests.{gpu}", f"limits.{gpu}")),
    )
    bounds = (("ZEXEC_K8S_LIMIT_RANGE_MAX", parse_labels(settings.limit_range_max)),
              ("ZEXEC_K8S_RESOURCE_QUOTA", parse_labels(settings.resource_quota)))
    for name, setting, want, parse, *keys in wants:
        for (where, values), key_set in zip(bounds, keys, strict=True):
            short = _shortfall(values, key_set, want, parse)
            if short is not None:
                unit = {"cpus": "cores", "memory": "MiB", "gpus": "GPUs"}[name]
                raise ConfigurationError(
                    f"{where} has {short[0]}={short[1]}, below the most one server may "
                    f"ask for ({setting}={want:g} {unit}): such a spawn would be refused "
                    f"by Kubernetes. Raise the bound (chart: deployApi.kubernetes."
                    f"limitRange.max / resourceQuota.hard) or lower {setting}.")
