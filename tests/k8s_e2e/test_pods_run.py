"""The per-user server pods run for real: the Deploy API's Pods become podman containers
(tests/k8s_e2e/kubelet.py), the SDK reaches them through the broker, and the tests check
both the API server's view (pod status) and podman's (``podman ps`` / ``inspect``).

One cluster for the session (conftest.py); the tests run in file order (alice's numpy environment is
built once and used by the tests after it).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import zexec
from tests.helpers.stack import wait_for
from tests.k8s_e2e import podman
from zexec.adapters.transport_zmq.control_client import BrokerControlClient
from zexec.apps.devidp.tokens import user_id_for

pytestmark = pytest.mark.timeout(900)  # image builds and pip installs; a hang guard


@pytest.fixture(scope="module")
def alice(cluster):
    conn = zexec.connect(cluster.ep_url, cluster.tokens["alice"])
    yield conn
    conn.close()


def pod_of(cluster, user: str) -> dict:
    return cluster.pod_of(user)


def test_the_control_plane_runs_from_the_charts_deployments(cluster):
    if os.environ.get("ZEXEC_E2E_CONTROL_PLANE", "chart") != "chart":
        pytest.skip("control plane on the host (ZEXEC_E2E_CONTROL_PLANE=host)")
    running = {c["Names"][0]: c for c in json.loads(podman.run(
        "ps", "--format", "json").stdout or "[]")}
    for name in ("zexec-broker-pod-0-broker", "zexec-deploy-api-pod-0-deploy-api",
                 "zexec-ep-api-pod-0-ep-api"):
        assert name in running, sorted(running)
        info = podman.inspect(name)
        assert info["ImageName"] == cluster.images["apps"]
        assert info["Config"]["User"] == "10001:10001" or info["Config"]["User"] == "10001"
    assert set(cluster.procs) == {"devidp"}  # nothing of zexec runs on the host


def test_numpy_environment_runs_in_podman_containers(cluster, alice, capsys):
    st = alice.environment(["numpy"], progress=False, timeout=600)
    assert st["phase"] == "ready"

    # The API server's view: a Running pod whose init containers completed, Ready once
    # its probe ran (the user's status is ready sooner: when the broker registered the
    # pod's server, below).
    def ready_pod() -> dict | None:
        pod = pod_of(cluster, "alice")
        conds = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
        return pod if conds.get("Ready") == "True" else None

    pod = wait_for(ready_pod, timeout=60, interval=0.2, what="the pod's Ready condition")
    ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
    status = pod["status"]
    assert status["phase"] == "Running"
    # What made the user's status ready: the broker registered this pod's own server
    # (its heartbeats name the pod), as the Deploy API asks it.
    broker = BrokerControlClient("127.0.0.1", cluster.ports["control"], cluster.admin_token)
    assert broker.server_info(user_id_for("alice"))["name"] == name
    assert [(c["name"], c["state"]["terminated"]["exitCode"])
            for c in status["initContainerStatuses"]] == [("install", 0)]

    # podman's view: the same containers, the server running, from our server image.
    found = {c["Labels"][podman.CONTAINER]: c for c in podman.containers(ns, name)}
    assert set(found) == {"install", "server"}
    assert found["server"]["State"] == "running"
    assert found["install"]["State"] == "exited"
    assert podman.runs_image(found["server"]["Names"][0], cluster.images["server"])
    install_log = podman.logs(found["install"]["Names"][0])
    assert "+ numpy==" in install_log  # uv's report of what it installed
    assert "warning" not in install_log.lower()

    # Print streaming and a numpy round trip through broker -> pod.
    def work(a):
        import numpy

        for i in range(3):
            print(f"line {i}", flush=True)
        return a * 2, numpy.__version__

    data = np.arange(100_000, dtype=np.float64)
    doubled, version = alice.client.call(work, data)
    assert np.array_equal(doubled, data * 2)
    assert version
    assert "line 0\nline 1\nline 2\n" in capsys.readouterr().out


def test_security_context_seen_from_inside_the_pod(alice):
    def inside():
        import os

        status = dict(line.split(":", 1) for line in open("/proc/self/status")
                      if ":" in line)
        return {
            "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
            "token": os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"),
            "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
            "venv_writable": os.access("/opt/zexec/venv", os.W_OK),
            "etc_zexec_writable": os.access("/etc/zexec", os.W_OK),
            "credential_in_env": "ZEXEC_SERVER_CREDENTIAL" in os.environ,
        }

    seen = alice.client.call(inside)
    assert (seen["uid"], seen["gid"]) == (1000, 1000)
    assert 1000 in seen["groups"]
    assert seen["token"] is False  # automountServiceAccountToken: false
    assert seen["cap_eff"] == "0000000000000000"  # capabilities: drop ALL
    assert seen["no_new_privs"] == "1"  # allowPrivilegeEscalation: false
    assert seen["venv_writable"] and not seen["etc_zexec_writable"]


def test_cancel_stops_the_work_inside_the_container(cluster, alice, capsys):
    def slow():
        import os
        import time

        print(os.getpid(), flush=True)
        time.sleep(120)

    fut = alice.client.submit(slow)
    out = wait_for(lambda: capsys.readouterr().out.strip(), timeout=60, what="worker pid")
    pid = int(out.split()[0])
    pod = pod_of(cluster, "alice")
    ctr = podman.containers(pod["metadata"]["namespace"], pod["metadata"]["name"])
    server = next(c["Names"][0] for c in ctr if c["Labels"][podman.CONTAINER] == "server")

    def alive() -> bool:
        return podman.run("exec", server, "test", "-d", f"/proc/{pid}", check=False,
                          timeout=60).returncode == 0

    assert alive()
    assert fut.cancel()
    wait_for(lambda: not alive(), timeout=60, what="the cancelled worker to end")
    assert alice.client.call(pow, 3, 4) == 81  # the server goes on serving


def test_a_failed_install_is_reported_with_the_installers_reason(cluster):
    bob = zexec.connect(cluster.ep_url, cluster.tokens["bob"])
    try:
        with pytest.raises(zexec.EnvironmentFailed) as err:
            bob.environment(["zexec-no-such-package-e2e==0.0.1"], progress=False, timeout=600)
        text = str(err.value) + "\n".join(err.value.log_tail)
        assert "install" in text
        # uv's own words, from the install container's termination message
        assert "zexec-no-such-package-e2e was not found in the package registry" in text
        assert bob.status()["phase"] == "failed"
        pod = pod_of(cluster, "bob")
        init = {c["name"]: c for c in pod["status"]["initContainerStatuses"]}
        assert init["install"]["state"]["terminated"]["exitCode"] != 0
        assert pod["status"]["phase"] == "Failed"
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        states = {c["Labels"][podman.CONTAINER]: c["State"] for c in podman.containers(ns, name)}
        assert states["install"] == "exited"
        assert states.get("server", "created") == "created"  # created ahead, never started
    finally:
        bob.terminate()
        bob.close()


def test_terminate_removes_the_pod_and_its_containers(cluster, alice):
    pod = pod_of(cluster, "alice")
    ns = pod["metadata"]["namespace"]
    assert podman.containers(ns)
    assert alice.terminate()["terminated"] is True
    wait_for(lambda: not podman.containers(ns), timeout=120,
             what="podman to have no container of the namespace left")
    assert alice.status() is None
