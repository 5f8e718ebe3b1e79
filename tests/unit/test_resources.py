"""Resources per server: the pure validation against the site's limits, their encoding
in records, and what they change in the lifecycle rules (another server, same install)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from zexec.core import replacing
from zexec.core.envspec import parse_env_spec
from zexec.core.errors import InvalidEnvironment, ResourceLimitExceeded
from zexec.core.model import Resources, ServerStatus
from zexec.core.resources import (
    ResourceLimits,
    cpu_cores,
    describe_resources,
    memory_mib,
    parse_resources,
    resources_dict,
    resources_from_dict,
    thread_env,
)

LIMITS = ResourceLimits(max_cpus=4, max_memory=8192, max_gpus=1, max_workers=8,
                        default_workers=1)


def test_nothing_asked_is_the_site_default():
    assert parse_resources({}, LIMITS) == Resources()
    assert parse_resources({"cpus": None, "memory": None}, LIMITS).default


def test_values_within_the_limits_are_kept_in_their_units():
    got = parse_resources({"cpus": 1.5, "memory": 4096, "gpus": 1, "workers": 2}, LIMITS)
    assert got == Resources(cpus=1.5, memory=4096, gpus=1, workers=2)
    assert parse_resources({"cpus": 2}, LIMITS).cpus == 2.0
    assert parse_resources({"memory": 512.0}, LIMITS).memory == 512


def test_cpus_are_kept_to_millicores():
    assert parse_resources({"cpus": 0.12345}, LIMITS).cpus == 0.123


def test_asking_for_the_defaults_explicitly_is_the_same_as_not_asking():
    assert parse_resources({"gpus": 0, "workers": 1}, LIMITS) == Resources()
    no_default = replace(LIMITS, default_workers=None)
    assert parse_resources({"workers": 1}, no_default) == Resources(workers=1)


@pytest.mark.parametrize("field, value, limit, setting, chart", [
    ("cpus", 8, "4", "ZEXEC_DEPLOY_MAX_CPUS=4", "deployApi.resourceLimits.maxCpus"),
    ("cpus", 4.5, "4", "ZEXEC_DEPLOY_MAX_CPUS=4", "deployApi.resourceLimits.maxCpus"),
    ("memory", 8193, "8192", "ZEXEC_DEPLOY_MAX_MEMORY=8192",
     "deployApi.resourceLimits.maxMemory"),
    ("gpus", 2, "1", "ZEXEC_DEPLOY_MAX_GPUS=1", "deployApi.resourceLimits.maxGpus"),
    ("workers", 9, "8", "ZEXEC_DEPLOY_MAX_WORKERS=8", "deployApi.resourceLimits.maxWorkers"),
])
def test_over_a_limit_names_the_limit_its_value_and_where_it_is_set(field, value, limit,
                                                                   setting, chart):
    with pytest.raises(ResourceLimitExceeded) as err:
        parse_resources({field: value}, LIMITS)
    msg = str(err.value)
    assert f"{field}={value:g}" in msg and f"limit of {limit}" in msg
    assert setting in msg and chart in msg
    assert isinstance(err.value, InvalidEnvironment)  # 422 like other validation errors


def test_gpus_on_a_site_without_gpus_say_so():
    with pytest.raises(ResourceLimitExceeded, match=r"allows no GPUs \(ZEXEC_DEPLOY_MAX_GPUS=0"):
        parse_resources({"gpus": 1}, replace(LIMITS, max_gpus=0))


def test_limits_are_inclusive():
    got = parse_resources({"cpus": 4, "memory": 8192, "gpus": 1, "workers": 8}, LIMITS)
    assert got == Resources(cpus=4.0, memory=8192, gpus=1, workers=8)


@pytest.mark.parametrize("raw, why", [
    ({"cpus": 0}, "at least 0.001"),
    ({"cpus": -1}, "at least 0.001"),
    ({"cpus": 0.0001}, "at least 0.001"),
    ({"cpus": "2"}, "cpus must be a number"),
    ({"cpus": True}, "cpus must be a number"),
    ({"cpus": float("nan")}, "finite"),
    ({"memory": 0}, "positive number of MiB"),
    ({"memory": "4Gi"}, "whole number of MiB"),
    ({"memory": 1.5}, "whole number"),
    ({"gpus": -1}, "0 or more"),
    ({"gpus": 0.5}, "whole number"),
    ({"workers": 0}, "1 or more"),
    ({"workers": "two"}, "whole number"),
    ({"disk": 10}, "unknown resource"),
])
def test_wrong_values_are_refused_with_the_reason(raw, why):
    with pytest.raises(InvalidEnvironment, match=why) as err:
        parse_resources(raw, LIMITS)
    assert not isinstance(err.value, ResourceLimitExceeded)


def test_records_round_trip_and_leave_defaults_out():
    res = Resources(cpus=0.5, memory=1024, workers=3)
    assert resources_dict(res) == {"cpus": 0.5, "memory": 1024, "workers": 3}
    assert resources_from_dict(resources_dict(res)) == res
    assert resources_from_dict(None) == Resources() == resources_from_dict({})
    with pytest.raises(ValueError):
        resources_from_dict({"cpus": "lots"})
    with pytest.raises(ValueError):
        resources_from_dict({"disk": 1})


def test_description():
    assert describe_resources(Resources()) == "site defaults"
    assert describe_resources(Resources(cpus=1, memory=512)) == "cpus=1, memory=512 MiB"


def test_kubernetes_quantities():
    assert cpu_cores("250m") == 0.25 and cpu_cores("2") == 2.0 and cpu_cores("1.5") == 1.5
    assert memory_mib("4Gi") == 4096 and memory_mib("512Mi") == 512
    assert memory_mib("1G") == pytest.approx(953.67, rel=1e-3)
    for parse, bad in ((cpu_cores, "2 cores"), (cpu_cores, ""), (memory_mib, "4GB")):
        with pytest.raises(ValueError):
            parse(bad)


def test_thread_variables_give_each_worker_its_share_of_the_cores():
    assert thread_env(1, 2)["OMP_NUM_THREADS"] == "1"
    env = thread_env(4, 2)
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] \
        == env["NUMEXPR_NUM_THREADS"] == "2"


# ------------------------------------------------------------- lifecycle rules


SPEC = parse_env_spec(["python==3.12", "numpy"])


def ready(spec):
    return ServerStatus("u", "ready", spec)


def test_resources_do_not_change_the_install_digest():
    other = replace(SPEC, resources=Resources(cpus=2, workers=2))
    assert other.digest == SPEC.digest
    assert not other.same_server(SPEC) and SPEC.same_server(replace(SPEC))


def test_other_resources_are_another_server():
    two = replace(SPEC, resources=Resources(cpus=2))
    assert replacing.plan_ensure(ready(SPEC), None, SPEC, force=False) == "keep-current"
    assert replacing.plan_ensure(ready(SPEC), None, two, force=False) == "conflict"
    assert replacing.plan_ensure(ready(SPEC), None, two, force=True) == "replace-beside"
    assert replacing.plan_ensure(ready(two), None, two, force=False) == "keep-current"


def test_the_conflict_message_names_the_resources_when_only_they_differ():
    two = replace(SPEC, resources=Resources(cpus=2))
    msg = str(replacing.conflict("u", ready(SPEC), None, two))
    assert "resources site defaults, requested cpus=2" in msg and "force=true" in msg
    other = parse_env_spec(["python==3.12", "pandas"])
    assert "digest" in str(replacing.conflict("u", ready(SPEC), None, other))
