"""Resources per server on the cluster: the Deploy API container (started from the
chart's Deployment, with the chart's resourceLimits) refuses a request over its limit
with a message naming it, and a server asked for ``cpus``, ``memory`` and ``workers``
runs in a pod with those requests/limits and that many worker processes, seen from
inside the podman container. (The test kubelet applies no cgroup limits, so the CPU
bound itself is not observable here; the pod spec is what a real kubelet enforces.)"""

from __future__ import annotations

import uuid

import pytest

import zexec

pytestmark = pytest.mark.timeout(900)  # image builds; a hang guard


def meet(rendezvous: str, call: int, expected: int) -> dict:
    """Runs in the pod: waits (at most 2 minutes) until ``expected`` calls have
    started, which only that many workers can do at once."""
    import os
    import time

    d = os.path.join("/tmp", rendezvous)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, str(call)), "w").close()
    deadline = time.monotonic() + 120
    while len(os.listdir(d)) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"pid": os.getpid(), "together": len(os.listdir(d)) >= expected}


def test_resources_reach_the_pod_and_the_site_limit_is_enforced(cluster):
    conn = zexec.connect(cluster.ep_url, cluster.tokens["gus"])
    try:
        with pytest.raises(zexec.ResourceLimitExceeded, match=r"ZEXEC_DEPLOY_MAX_CPUS=\d"):
            conn.environment([], progress=False, cpus=64)
        assert conn.status() is None  # refused before anything was made

        st = conn.environment([], progress=False, timeout=600, cpus=0.5, memory=1024,
                              workers=3)
        assert st["env"]["resources"] == {"cpus": 0.5, "memory": 1024, "workers": 3}
        assert {k: st["resources"][k] for k in ("cpus", "memory", "gpus", "workers")} == {
            "cpus": 0.5, "memory": 1024, "gpus": 0, "workers": 3}

        pod = cluster.pod_of("gus")
        (server,) = [c for c in pod["spec"]["containers"] if c["name"] == "server"]
        assert server["resources"]["requests"]["cpu"] == server["resources"]["limits"]["cpu"] \
            == "500m"
        assert server["resources"]["limits"]["memory"] == "1024Mi"
        assert {"name": "ZEXEC_SERVER_WORKERS", "value": "3"} in server["env"]
        assert cluster.containers_of("gus")["server"]["State"] == "running"  # podman's view

        rendezvous = f"rv-{uuid.uuid4().hex}"
        futures = [conn.client.submit(meet, rendezvous, i, 3) for i in range(3)]
        seen = [f.result(timeout=300) for f in futures]
        assert all(s["together"] for s in seen), "three calls did not run at once"
        assert len({s["pid"] for s in seen}) == 3  # three worker processes
    finally:
        conn.terminate()
        conn.close()
