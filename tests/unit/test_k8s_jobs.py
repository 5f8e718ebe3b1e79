"""jobs: the server Job built around build_pod's pod, and a Job + its pods as a phase."""

from __future__ import annotations

import kubernetes_validate

from zexec.adapters.orchestrator_k8s import jobs
from zexec.adapters.orchestrator_k8s import manifests as m
from zexec.core.envspec import parse_env_spec
from zexec.settings import KubernetesSettings

T0, T1, T2 = "2024-05-01T10:00:00Z", "2024-05-01T10:00:05Z", "2024-05-01T10:00:09Z"
LABELS = {"app.kubernetes.io/managed-by": "zexec"}


def server_pod() -> dict:
    return m.build_pod("zexec-u-a", "zexec-server-x", "a",
                       parse_env_spec(["python==3.12", "six"]), "img:1", KubernetesSettings(),
                       LABELS)


def job(*conditions: tuple[str, str], **status) -> dict:
    conds = [{"type": t, "status": "True", "reason": r, "message": f"{t} {r}",
              "lastTransitionTime": T2} for t, r in conditions]
    return {"metadata": {"name": "zexec-server-x"}, "status": {"conditions": conds, **status}}


def pod(name: str, created: str, phase: str | None = None, **status) -> dict:
    st = {"phase": phase, **status} if phase else status
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "labels": {jobs.JOB_NAME_LABEL: "zexec-server-x"}}, "status": st}


READY = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": T1}]}
CRASH = {"containerStatuses": [{"name": "server", "state": {"terminated": {"exitCode": 2}}}]}
LOST = {"conditions": [{"type": "DisruptionTarget", "status": "True",
                        "message": "Taint manager: deleting due to NoExecute taint"}]}


def test_the_job_wraps_the_pod_unchanged_and_is_schema_valid():
    p = server_pod()
    j = jobs.build_job(p)
    assert j["metadata"]["name"] == p["metadata"]["name"]
    assert j["spec"]["template"]["spec"] == p["spec"]
    assert j["spec"]["template"]["metadata"]["labels"] == p["metadata"]["labels"]
    assert j["spec"]["template"]["metadata"]["annotations"] == {
        **p["metadata"]["annotations"], jobs.SAFE_TO_EVICT: "true"}
    assert (j["spec"]["backoffLimit"], j["spec"]["completions"], j["spec"]["parallelism"]) == \
        (0, 1, 1)
    disrupted, signalled, fail = j["spec"]["podFailurePolicy"]["rules"]
    assert disrupted["action"] == "Ignore"  # first: a disrupted server may exit non-zero
    assert disrupted["onPodConditions"][0]["type"] == "DisruptionTarget"
    # A server stopped by SIGTERM exits with the code its pod sets; that is ignored too.
    assert signalled["action"] == "Ignore"
    assert signalled["onExitCodes"]["values"] == [m.SIGNAL_EXIT_CODE] == [143]
    server_env = {e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]}
    assert server_env["ZEXEC_SERVER_SIGNAL_EXIT_CODE"] == str(m.SIGNAL_EXIT_CODE)
    assert fail["action"] == "FailJob"
    assert fail["onExitCodes"]["containerName"] == m.SERVER_CONTAINER
    assert fail["onExitCodes"]["values"] == [0, m.SIGNAL_EXIT_CODE]
    kubernetes_validate.validate(j, "1.31.0", strict=True)


def test_finding_the_jobs_pods_and_the_current_one():
    a, b = pod("a", T0, "Failed", **LOST), pod("b", T1, "Running")
    other = {"metadata": {"name": "c", "labels": {"job-name": "another"}}}
    legacy = {"metadata": {"name": "d", "creationTimestamp": T0,
                           "labels": {"job-name": "zexec-server-x"}}}
    assert jobs.pods_of("zexec-server-x", [a, b, other, legacy]) == [a, b, legacy]
    assert jobs.current_pod([a, b])["metadata"]["name"] == "b"
    assert jobs.current_pod([b, a])["metadata"]["name"] == "b"
    assert jobs.current_pod([a])["metadata"]["name"] == "a"  # all ended: the newest
    assert jobs.current_pod([]) is None
    assert jobs.job_selector("j") == "batch.kubernetes.io/job-name=j"


def test_phases_of_a_job():
    phase = jobs.job_phase
    assert phase(job(), [])[0].phase == "pending"
    got, logs = phase(job(), [pod("a", T0, "Running", **READY)])
    assert (got.phase, logs) == ("ready", "a")  # the pod (its server's name, its logs)
    # The pod was lost (or is being evicted): the Job's controller replaces it.
    for lost in (pod("a", T0, "Unknown"), pod("a", T0, "Running", **LOST),
                 {**pod("a", T0, "Running"), "metadata": {
                     "name": "a", "deletionTimestamp": T1}}):
        got, _ = phase(job(), [lost])
        assert got.phase == "starting" and "Kubernetes is replacing it" in got.reason, lost
    # ...and its new pod is what the user sees.
    got, _ = phase(job(), [pod("a", T0, "Failed", **LOST), pod("b", T1, "Running", **READY)])
    assert got.phase == "ready"
    got, logs = phase(job(("FailureTarget", "PodFailurePolicy"), ("Failed", "PodFailurePolicy")),
                      [pod("a", T0, "Failed", **LOST), pod("b", T1, "Failed", **CRASH)])
    assert got.phase == "failed" and "exit code 2" in got.reason and logs == "b"
    got, logs = phase(job(("Failed", "BackoffLimitExceeded")), [])
    assert (got.phase, got.reason, logs) == ("failed", "Failed BackoffLimitExceeded", None)
    got, _ = phase(job(("SuccessCriteriaMet", "CompletionsReached"),
                       ("Complete", "CompletionsReached"), completionTime=T2), [])
    assert (got.phase, got.reason, got.since) == ("terminated", "idle", 1714557609.0)
    # Drained: SIGTERM, the server exited 0 (its Job completes), the pod says why.
    got, _ = phase(job(("Complete", "CompletionsReached")), [pod("a", T0, "Succeeded", **LOST)])
    assert (got.phase, got.reason) == (
        "terminated", "evicted (Taint manager: deleting due to NoExecute taint)")
    got, _ = phase({"metadata": {"deletionTimestamp": T2}}, [])
    assert (got.phase, got.reason) == ("terminated", "deleted")
