"""The test Job controller (tests/helpers/k8s_jobs.py) on the kmock emulator: it does
what kube-controller-manager's does for a server Job's fields, so the tests that use it
in place of a cluster's stand on real semantics."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from tests.helpers.k8s_jobs import TRACKING, TestJobController
from zexec.adapters.orchestrator_k8s import jobs
from zexec.adapters.orchestrator_k8s import manifests as m
from zexec.core.envspec import parse_env_spec
from zexec.settings import KubernetesSettings

pytest_plugins = ["k8s_fixtures"]

NS = "zexec-u-jc"


@pytest.fixture(scope="module")
def api(kube):
    """The session's emulator (a second one would undo its path parser at its exit)."""
    api = kube[1]
    client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}},
                                           _preload_content=False)
    yield api
    client.CoreV1Api(api).delete_namespace(NS, _preload_content=False)


def make_job(api, name: str) -> None:
    pod = m.build_pod(NS, name, "jc", parse_env_spec(["python==3.12"]), "img",
                      KubernetesSettings(), {"app.kubernetes.io/managed-by": "zexec"})
    client.BatchV1Api(api).create_namespaced_job(NS, jobs.build_job(pod),
                                                 _preload_content=False)


def job(api, name: str) -> dict:
    return json.loads(client.BatchV1Api(api).read_namespaced_job(
        name, NS, _preload_content=False).data)


def pods(api, name: str) -> list[dict]:
    items = json.loads(client.CoreV1Api(api).list_namespaced_pod(
        NS, _preload_content=False).data)["items"]
    return jobs.pods_of(name, items)


def set_status(api, pod: dict, status: dict) -> None:
    client.CoreV1Api(api).patch_namespaced_pod_status(
        pod["metadata"]["name"], NS, {"status": status}, _preload_content=False)


def conditions(api, name: str) -> list[tuple[str, str]]:
    return [(c["type"], c["reason"]) for c in job(api, name)["status"].get("conditions", [])]


def test_a_pod_from_the_template_owned_and_labelled_as_the_job_controller_does(api):
    make_job(api, "j1")
    ctl = TestJobController(api)
    ctl.sync()
    ctl.sync()  # idempotent: one pod while it lives
    (pod,) = pods(api, "j1")
    meta, j = pod["metadata"], job(api, "j1")
    uid = j["metadata"]["uid"]
    assert meta["generateName"] == "j1-" and meta["name"].startswith("j1-")
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "j1",
                                        "uid": uid, "controller": True,
                                        "blockOwnerDeletion": True}]
    assert {meta["labels"][k] for k in ("batch.kubernetes.io/job-name", "job-name")} == {"j1"}
    assert meta["labels"]["batch.kubernetes.io/controller-uid"] == uid
    assert meta["finalizers"] == [TRACKING]
    assert pod["spec"] == j["spec"]["template"]["spec"]
    assert meta["annotations"][jobs.SAFE_TO_EVICT] == "true"
    assert j["status"]["active"] == 1 and "startTime" in j["status"]


def test_disruption_is_ignored_and_replaced_a_server_crash_fails_the_job(api):
    make_job(api, "j2")
    ctl = TestJobController(api)
    ctl.sync()
    (first,) = pods(api, "j2")
    # Unknown (node lost) is not an end: the controller waits for the eviction.
    set_status(api, first, {"phase": "Unknown"})
    ctl.sync()
    assert [p["metadata"]["name"] for p in pods(api, "j2")] == [first["metadata"]["name"]]
    set_status(api, first, {"phase": "Failed", "conditions": [
        {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}],
        "containerStatuses": [{"name": "server", "state": {"terminated": {"exitCode": 137}}}]})
    ctl.sync()
    second = jobs.current_pod(pods(api, "j2"))
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert conditions(api, "j2") == [] and job(api, "j2")["status"].get("failed", 0) == 0
    # The failed pod stays (as a cluster keeps a Job's failed pods), accounted for.
    old = {p["metadata"]["name"]: p for p in pods(api, "j2")}[first["metadata"]["name"]]
    assert TRACKING not in (old["metadata"].get("finalizers") or [])
    set_status(api, second, {"phase": "Failed", "containerStatuses": [
        {"name": "server", "state": {"terminated": {"exitCode": 3}}}]})
    ctl.sync()
    assert conditions(api, "j2") == [("FailureTarget", "PodFailurePolicy"),
                                     ("Failed", "PodFailurePolicy")]
    ctl.sync()
    assert len(pods(api, "j2")) == 2  # no new pod for a failed Job


def test_a_server_stopped_by_sigterm_gets_a_new_pod_not_a_completed_job(api):
    """A drain without the DisruptionTarget condition (a deleted pod, an older cluster):
    the server exits with the pod's ZEXEC_SERVER_SIGNAL_EXIT_CODE, and rule 2 makes
    the Job replace it rather than fail (any other exit) or complete (exit 0)."""
    make_job(api, "j-term")
    ctl = TestJobController(api)
    ctl.sync()
    (first,) = pods(api, "j-term")
    set_status(api, first, {"phase": "Failed", "containerStatuses": [
        {"name": "server", "state": {"terminated": {"exitCode": m.SIGNAL_EXIT_CODE}}}]})
    ctl.sync()
    second = jobs.current_pod(pods(api, "j-term"))
    assert second["metadata"]["name"] != first["metadata"]["name"]
    assert conditions(api, "j-term") == [] and job(api, "j-term")["status"].get("failed", 0) == 0
    assert jobs.job_phase(job(api, "j-term"), pods(api, "j-term"))[0].phase == "pending"


def test_an_install_failure_exceeds_backoff_limit_0_and_success_completes(api):
    make_job(api, "j3")
    make_job(api, "j4")
    ctl = TestJobController(api)
    ctl.sync()
    (install,) = pods(api, "j3")
    set_status(api, install, {"phase": "Failed", "initContainerStatuses": [
        {"name": "install", "state": {"terminated": {"exitCode": 1}}}]})
    (idle,) = pods(api, "j4")
    set_status(api, idle, {"phase": "Succeeded", "containerStatuses": [
        {"name": "server", "state": {"terminated": {"exitCode": 0}}}]})
    ctl.sync()
    assert conditions(api, "j3")[-1] == ("Failed", "BackoffLimitExceeded")
    assert job(api, "j3")["status"]["failed"] == 1
    assert conditions(api, "j4") == [("SuccessCriteriaMet", "CompletionsReached"),
                                     ("Complete", "CompletionsReached")]
    assert job(api, "j4")["status"]["succeeded"] == 1 and "completionTime" in job(api, "j4")["status"]
    ctl.sync()
    assert len(pods(api, "j3")) == len(pods(api, "j4")) == 1
    assert all(TRACKING not in (p["metadata"].get("finalizers") or [])
               for p in pods(api, "j3") + pods(api, "j4"))  # accounted for


def test_a_deleted_jobs_pods_are_collected(api):
    make_job(api, "j5")
    ctl = TestJobController(api)
    ctl.sync()
    assert len(pods(api, "j5")) == 1
    client.BatchV1Api(api).delete_namespaced_job("j5", NS, propagation_policy="Background",
                                                 _preload_content=False)
    ctl.sync()
    assert pods(api, "j5") == []
