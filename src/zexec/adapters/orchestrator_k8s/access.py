"""The Deploy API's access to one user's namespace.

The Deploy API holds cluster-wide rights on namespaces only (and to create RoleBindings
of one ClusterRole). Everything inside a user's namespace (pods, their logs, ConfigMaps,
the credential Secret, the NetworkPolicy, quota) it may touch through a RoleBinding it
creates there, right after the namespace, binding the chart's per-user ClusterRole
(``ZEXEC_K8S_USER_ROLE``) to its own ServiceAccount (``ZEXEC_K8S_SERVICE_ACCOUNT``). So
it can read no pod, log or ConfigMap outside user namespaces, and the binding goes when
the namespace does.

The API server's authorizer learns a new binding from a watch, a moment later: the first
call it permits is retried while it answers 403 (:func:`until_permitted`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from zexec.adapters.orchestrator_k8s.apicalls import api_errors, raw
from zexec.core.errors import ConfigurationError, OrchestratorError

BINDING_NAME = "zexec-deploy-api"
T = TypeVar("T")


def service_account(text: str) -> tuple[str, str]:
    """``"namespace:name"`` -> (namespace, name)."""
    ns, sep, name = text.partition(":")
    if not sep or not ns or not name:
        raise ConfigurationError(f"service account {text!r}: expected namespace:name")
    return ns, name


def build_role_binding(
    namespace: str, role: str, account: str, labels: dict[str, str]
) -> dict[str, Any]:
    sa_ns, sa_name = service_account(account)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": BINDING_NAME, "namespace": namespace, "labels": dict(labels)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_ns}],
    }


def grant(rbac_api: Any, namespace: str, role: str, account: str,
          labels: dict[str, str]) -> None:
    """Create the RoleBinding in ``namespace`` (an existing one is kept). Nothing when
    ``role`` is empty: the Deploy API's permissions then come from elsewhere."""
    if not role:
        return
    body = build_role_binding(namespace, role, account, labels)
    try:
        rbac_api.create_namespaced_role_binding(namespace, body, _preload_content=False)
    except ApiException as e:
        if e.status != 409:
            raise


def granting(call: Callable[[], T], grant: Callable[[], None], enabled: bool = True) -> T:
    """``call()``; if it is forbidden, ``grant()`` (the RoleBinding) and call again while
    the binding propagates. For namespaces made before the per-user role existed: their
    servers are read (status, list) before any spawn would bind it."""
    try:
        return call()
    except ApiException as e:
        if e.status != 403 or not enabled:
            raise
    grant()
    return until_permitted(call)


def until_permitted(call: Callable[[], T], timeout: float = 10.0,
                    sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> T:
    """``call()``, retried while it fails with 403 for up to ``timeout`` seconds."""
    deadline = clock() + timeout
    delay = 0.05
    while True:
        try:
            return call()
        except ApiException as e:
            if e.status != 403 or clock() >= deadline:
                raise
        sleep(delay)
        delay = min(delay * 2, 1.0)


def apply_policy(net: Any, ns: str, body: dict[str, Any]) -> None:
    """Create the server NetworkPolicy ``body`` in user namespace ``ns``, or update it
    (settings may have changed since), as the first call the new RoleBinding permits."""
    try:
        until_permitted(lambda: raw(net.create_namespaced_network_policy, ns, body))
    except ApiException as e:
        if e.status != 409:
            raise OrchestratorError(f"creating the network policy: {e.status} {e.reason}") from e
        with api_errors("updating the network policy"):
            raw(net.patch_namespaced_network_policy, body["metadata"]["name"], ns, body)
