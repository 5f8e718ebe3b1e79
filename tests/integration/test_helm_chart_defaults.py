"""The chart installs as is (issue 15): sizing, package path, least privilege, safe
defaults, each asserted on the rendered objects, and every refusal fails the render
with a message naming the values to change.

Rendering is offline (pinned helm from scripts/k8s-tools.sh); defaults are rendered once.
"""

from __future__ import annotations

import pytest
from chart_support import (
    CHART,
    HelmError,
    container,
    deployment,
    ensure_tools,
    env_of,
    find,
    helm_template,
    render_docs,
)

EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def tools():
    return ensure_tools()


@pytest.fixture(scope="module")
def docs(tools) -> list[dict]:
    return render_docs()


def refused(sets: list[str], *message: str) -> str:
    """The render with ``sets`` fails, and its error says each of ``message``."""
    with pytest.raises(HelmError) as err:
        helm_template(sets=sets)
    for part in message:
        assert part in str(err.value), str(err.value)
    return str(err.value)


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


# --------------------------------------------------------------------------- broker sizing


def test_broker_limits_are_values_sized_for_the_default_memory_limit(docs):
    broker = container(deployment(docs, "broker"))
    env = env_of(broker, docs)
    for name in ("MAX_FRAME_BYTES", "MAX_QUEUED_BYTES", "MAX_PAYLOAD_BYTES",
                 "PREAUTH_BYTES", "PREAUTH_TOTAL_BYTES", "PREAUTH_TIMEOUT"):
        assert f"ZEXEC_BROKER_{name}" in env
    held = (max(int(env["ZEXEC_BROKER_MAX_PAYLOAD_BYTES"]),
                int(env["ZEXEC_BROKER_MAX_FRAME_BYTES"]))
            + int(env["ZEXEC_BROKER_PREAUTH_TOTAL_BYTES"])
            + int(env["ZEXEC_BROKER_MAX_QUEUED_BYTES"]) + (256 << 20))
    assert broker["resources"]["limits"]["memory"] == "3Gi"
    assert held <= 3 << 30


@pytest.mark.parametrize("sets", [
    ["broker.resources.limits.memory=1Gi"],
    ["broker.limits.maxQueuedBytes=2147483648"],
    ["broker.limits.maxFrameBytes=4294967296"],
])
def test_limits_that_cannot_fit_in_the_broker_memory_fail_the_render(tools, sets):
    refused(sets, "broker.resources.limits.memory", "cannot hold what broker.limits allow")


def test_smaller_limits_fit_a_smaller_broker(tools):
    docs = render_docs(sets=[
        "broker.resources.limits.memory=1700Mi",
        "broker.limits.maxPayloadBytes=1073741824",
        "broker.limits.maxFrameBytes=1073741824",
    ])
    assert container(deployment(docs, "broker"))["resources"]["limits"]["memory"] == "1700Mi"


def test_memory_limit_in_a_non_byte_unit_is_refused(tools):
    refused(["broker.resources.limits.memory=3000m"], "is not a memory quantity")


def test_priority_class_names(tools):
    docs = render_docs(sets=[
        "broker.priorityClassName=zexec-critical",
        "deployApi.priorityClassName=zexec-high",
        "epApi.priorityClassName=zexec-high",
    ])
    assert pod_spec(deployment(docs, "broker"))["priorityClassName"] == "zexec-critical"
    assert pod_spec(deployment(docs, "deploy-api"))["priorityClassName"] == "zexec-high"
    assert pod_spec(deployment(docs, "ep-api"))["priorityClassName"] == "zexec-high"


def test_no_priority_class_by_default(docs):
    for d in find(docs, "Deployment"):
        assert "priorityClassName" not in pod_spec(d)

