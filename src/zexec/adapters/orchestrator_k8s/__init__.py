"""Kubernetes orchestrator: a namespace per user with a NetworkPolicy, a Secret, a
requirements ConfigMap and the server Pod, through the official ``kubernetes`` client.

``KubernetesOrchestrator`` loads on first use (PEP 562): the server image runs
:mod:`~zexec.adapters.orchestrator_k8s.install_env` in the pod's init container, and the
server image has no ``kubernetes`` client to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zexec.adapters.orchestrator_k8s.orchestrator import KubernetesOrchestrator

__all__ = ["KubernetesOrchestrator"]


def __getattr__(name: str) -> Any:
    if name == "KubernetesOrchestrator":
        from zexec.adapters.orchestrator_k8s.orchestrator import KubernetesOrchestrator

        return KubernetesOrchestrator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
