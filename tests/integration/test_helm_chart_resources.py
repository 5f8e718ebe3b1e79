"""The chart's resource limits (deployApi.resourceLimits -> ZEXEC_DEPLOY_MAX_*) and the
user namespaces' bounds it derives: they hold a server at the maxima, so the Deploy
API's start-time check (quota.check_bounds) passes on what the chart renders, and
refuses what an explicit, too small bound would make of it."""

from __future__ import annotations

import pytest
from chart_support import container, deployment, ensure_tools, env_of, render_docs

from zexec.adapters.orchestrator_k8s.quota import check_bounds
from zexec.apps.deploy_api.service import resource_limits
from zexec.core.errors import ConfigurationError
from zexec.settings import DeploySettings, KubernetesSettings


@pytest.fixture(scope="module")
def tools():
    return ensure_tools()


def settings_of(sets, monkeypatch) -> tuple[DeploySettings, KubernetesSettings]:
    docs = render_docs(sets=sets)
    denv = env_of(container(deployment(docs, "deploy-api")), docs)
    for name, value in denv.items():
        if name.startswith(("ZEXEC_DEPLOY_", "ZEXEC_K8S_")):
            monkeypatch.setenv(name, value)
    return DeploySettings(), KubernetesSettings()


def test_the_default_release_admits_its_maxima(tools, monkeypatch):
    deploy, k8s = settings_of([], monkeypatch)
    limits = resource_limits(deploy)
    assert (limits.max_cpus, limits.max_memory, limits.max_gpus, limits.max_workers) == (
        2.0, 4096, 0, 8)
    assert limits.default_workers == k8s.server_workers == 2
    assert k8s.gpu_resource == "nvidia.com/gpu"
    check_bounds(k8s, limits)


def test_raised_maxima_raise_the_derived_bounds(tools, monkeypatch):
    deploy, k8s = settings_of(["deployApi.resourceLimits.maxCpus=4.5",
                               "deployApi.resourceLimits.maxMemory=8192",
                               "deployApi.resourceLimits.maxGpus=1"], monkeypatch)
    assert "cpu=4.5" in k8s.limit_range_max and "memory=8192Mi" in k8s.limit_range_max
    assert "requests.nvidia.com/gpu=3" in k8s.resource_quota  # three servers' worth
    check_bounds(k8s, resource_limits(deploy))


def test_an_explicit_bound_below_the_maxima_is_refused_at_start(tools, monkeypatch):
    deploy, k8s = settings_of(["deployApi.kubernetes.limitRange.max.cpu=1"], monkeypatch)
    with pytest.raises(ConfigurationError, match="ZEXEC_K8S_LIMIT_RANGE_MAX has cpu=1"):
        check_bounds(k8s, resource_limits(deploy))
