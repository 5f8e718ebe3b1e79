"""A server pod's compute resources from what its user asked for, and the start-time
check that the user namespaces' bounds hold a server at the site's maxima."""

from __future__ import annotations

from dataclasses import replace

import kubernetes_validate
import pytest

from zexec.adapters.orchestrator_k8s import manifests as m
from zexec.adapters.orchestrator_k8s.quota import check_bounds
from zexec.adapters.orchestrator_k8s.resources import granted
from zexec.core.envspec import parse_env_spec
from zexec.core.errors import ConfigurationError
from zexec.core.model import Resources
from zexec.core.resources import ResourceLimits
from zexec.settings import KubernetesSettings

SPEC = parse_env_spec(["python==3.11", "six"])
SETTINGS = KubernetesSettings()
LIMITS = ResourceLimits(max_cpus=2, max_memory=4096, max_gpus=1, max_workers=8)


def pod(resources=None, settings=SETTINGS):
    spec = replace(SPEC, resources=resources or Resources())
    return m.build_pod("zexec-u-alice", "zexec-server-x", "alice", spec, "img:1", settings,
                       m.server_labels("alice", spec))


def containers(p):
    (server,) = p["spec"]["containers"]
    return server, p["spec"]["initContainers"]


def env_of(c):
    return {e["name"]: e.get("value") for e in c["env"]}


def test_without_a_request_the_pod_gets_the_sites_defaults_as_before():
    server, init = containers(pod())
    assert server["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "1Gi"},
        "limits": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "10Gi"},
    }
    assert all(c["resources"] == server["resources"] for c in init)
    assert env_of(server)["ZEXEC_SERVER_WORKERS"] == "2"


def test_a_request_sets_request_and_limit_gpus_as_a_limit_and_the_workers():
    p = pod(Resources(cpus=1.5, memory=3072, gpus=1, workers=3))
    server, init = containers(p)
    assert server["resources"]["requests"] == {
        "cpu": "1500m", "memory": "3072Mi", "ephemeral-storage": "1Gi"}
    assert server["resources"]["limits"] == {
        "cpu": "1500m", "memory": "3072Mi", "ephemeral-storage": "10Gi", "nvidia.com/gpu": "1"}
    assert env_of(server)["ZEXEC_SERVER_WORKERS"] == "3"
    for c in init:  # installs need cpu and memory, never a GPU
        assert "nvidia.com/gpu" not in c["resources"]["limits"]
        assert c["resources"]["limits"]["cpu"] == "1500m"
    kubernetes_validate.validate(p, "1.31.0", strict=True)


def test_the_gpu_resource_name_is_a_setting():
    p = pod(Resources(gpus=2), KubernetesSettings(gpu_resource="amd.com/gpu"))
    limits = containers(p)[0]["resources"]["limits"]
    assert limits["amd.com/gpu"] == "2" and "nvidia.com/gpu" not in limits


def test_the_env_annotation_carries_the_resources_and_reads_back():
    spec = replace(SPEC, resources=Resources(cpus=0.5, workers=4))
    assert m.env_from(m.env_json(spec)) == spec
    assert "resources" not in m.env_json(SPEC)  # as before for servers without a request
    assert m.env_from(m.env_json(SPEC)) == SPEC


def test_granted_fills_in_the_sites_defaults():
    assert granted(SETTINGS, Resources()) == Resources(cpus=2.0, memory=4096, gpus=0, workers=2)
    assert granted(SETTINGS, Resources(cpus=0.5, memory=1024, workers=1)) == Resources(
        cpus=0.5, memory=1024, gpus=0, workers=1)


def test_bounds_that_hold_the_maxima_pass():
    check_bounds(SETTINGS, LIMITS)  # no quota, no limit range: nothing to hold
    check_bounds(KubernetesSettings(limit_range_max="cpu=2,memory=4Gi,nvidia.com/gpu=1",
                                    resource_quota="pods=4,limits.cpu=6,limits.memory=12Gi,"
                                                   "requests.nvidia.com/gpu=2"), LIMITS)


@pytest.mark.parametrize("field, value, named", [
    ("limit_range_max", "cpu=1500m,memory=4Gi", "ZEXEC_K8S_LIMIT_RANGE_MAX has cpu=1500m"),
    ("limit_range_max", "memory=2Gi", "ZEXEC_K8S_LIMIT_RANGE_MAX has memory=2Gi"),
    ("limit_range_max", "nvidia.com/gpu=0", "ZEXEC_DEPLOY_MAX_GPUS=1"),
    ("resource_quota", "limits.cpu=1", "ZEXEC_K8S_RESOURCE_QUOTA has limits.cpu=1"),
    ("resource_quota", "requests.memory=1Gi", "ZEXEC_DEPLOY_MAX_MEMORY=4096 MiB"),
    ("resource_quota", "requests.nvidia.com/gpu=0", "requests.nvidia.com/gpu=0"),
])
def test_bounds_that_cannot_hold_a_server_at_the_maxima_stop_the_start(field, value, named):
    with pytest.raises(ConfigurationError) as err:
        check_bounds(KubernetesSettings(**{field: value}), LIMITS)
    assert named in str(err.value) and "Raise the bound" in str(err.value)


def test_a_bound_that_is_no_quantity_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="not a quantity"):
        check_bounds(KubernetesSettings(limit_range_max="cpu=lots"), LIMITS)
