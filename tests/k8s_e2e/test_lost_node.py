"""A server on a lost node is recreated by its Job's controller, without a spawn: the
test kubelet kills the pod's containers and writes what a node controller would (phase
``Unknown``; or the taint manager's ``DisruptionTarget`` condition), the user's status
says ``starting`` (being replaced, not failed), the taint manager evicts the pod once its
``tolerationSeconds`` are up (the ``DisruptionTarget`` condition, then delete: done here
by :meth:`TestKubelet.evict`), the Job's ``podFailurePolicy`` ignores that failure and
the controller makes a new pod, which registers; the status turns ``ready`` on its own
and the user's next call runs there. The server pod has a controller ownerReference, so
``kubectl drain`` would evict it without ``--force``."""

from __future__ import annotations

import pytest

import zexec
from tests.helpers.stack import wait_for
from tests.k8s_e2e import podman

pytestmark = pytest.mark.timeout(900)

#: What the control plane writes when the node goes: the node lifecycle controller of
#: older clusters (phase Unknown), the taint manager about to evict (DisruptionTarget).
LOSSES = ({"unknown": True, "disruption": False}, {"unknown": False, "disruption": True})


def test_a_server_on_a_lost_node_is_recreated_by_its_job(cluster):
    conn = zexec.connect(cluster.ep_url, cluster.tokens["erin"])
    try:
        assert conn.environment([], progress=False, timeout=300)["phase"] == "ready"
        assert conn.client.call(pow, 2, 5) == 32
        job = cluster.job_of("erin")
        for how in LOSSES:
            old = cluster.pod_of("erin")
            ns, name = old["metadata"]["namespace"], old["metadata"]["name"]
            # What `kubectl drain` and the autoscaler check: a controller owns the pod.
            (owner,) = old["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["controller"]) == ("Job", job[1], True)
            assert old["metadata"]["annotations"][
                "cluster-autoscaler.kubernetes.io/safe-to-evict"] == "true"
            written = cluster.kubelet.lose_node(ns, name, **how)
            assert written["phase"] == ("Unknown" if how["unknown"] else "Running")
            # podman's view: the server container died with its node (podman says
            # "stopped" for a moment after the kill, while it cleans up, then "exited").
            wait_for(lambda: cluster.containers_of("erin")["server"]["State"] == "exited",
                     timeout=60, interval=0.2, what="the killed server container to exit")
            st = conn.status()
            assert st["phase"] == "starting" and "Kubernetes is replacing it" in st["reason"], st
            cluster.kubelet.evict(ns, name)  # the taint manager, after lostNodeSeconds
            # No spawn: the Job's controller makes a new pod, which becomes ready.
            wait_for(lambda: conn.status()["phase"] == "ready", timeout=300, interval=0.5,
                     what="the Job's new pod to be ready")
            assert cluster.job_of("erin") == job  # the same Job: nobody spawned
            new = cluster.pod_of("erin")
            assert new["metadata"]["name"] != name
            assert new["metadata"]["ownerReferences"][0]["name"] == job[1]
            assert new["status"]["phase"] == "Running"
            assert conn.client.call(pow, 3, 3) == 27
            # podman's view: the lost pod's containers are removed, the new server runs.
            wait_for(lambda ns=ns, name=name: not podman.containers(ns, name),
                     timeout=180, interval=0.5, what="the lost pod's containers to be removed")
            server = cluster.containers_of("erin")["server"]
            assert server["State"] == "running"
            assert podman.runs_image(server["Names"][0], cluster.images["server"])
        assert cluster.jobs is not None and cluster.jobs.errors == []
    finally:
        conn.terminate()
        conn.close()
