"""Bounds on one user's namespace: a ResourceQuota (what all its pods together may
request and use) and a LimitRange (the most one container may ask for), from
``ZEXEC_K8S_RESOURCE_QUOTA`` and ``ZEXEC_K8S_LIMIT_RANGE_MAX`` (``k=v,...``; empty =
none). They hold whatever a site plugin's pod overrides ask for, so one user cannot take
a node's worth of resources by accident or through a bug.

Made right after the RoleBinding, before any pod; on a later spawn they are patched to
the current settings.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from zexec.adapters.orchestrator_k8s.manifests import parse_labels
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
