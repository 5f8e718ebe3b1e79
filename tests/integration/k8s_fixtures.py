"""Fixtures for KubernetesOrchestrator tests on the kmock emulator (imported through
``pytest_plugins`` by the modules that use them)."""

from __future__ import annotations

import pytest
from kmock_support import K8S_SETTINGS, bare_plugin_manager, running_emulator
from orch_support import SECRET

from zexec.adapters.orchestrator_k8s import KubernetesOrchestrator


@pytest.fixture(scope="session")
def kube():
    """(emulator, ApiClient) for the whole run: one emulator thread, many tests."""
    with running_emulator() as pair:
        yield pair


@pytest.fixture
def k8s_orch(kube) -> KubernetesOrchestrator:
    return KubernetesOrchestrator(
        kube[1], K8S_SETTINGS, SECRET, bare_plugin_manager(), idle_timeout=600
    )
