"""Kubernetes orchestrator: a namespace per user with a NetworkPolicy, a Secret, a
requirements ConfigMap and the server Pod, through the official ``kubernetes`` client."""

from zexec.adapters.orchestrator_k8s.orchestrator import KubernetesOrchestrator

__all__ = ["KubernetesOrchestrator"]
