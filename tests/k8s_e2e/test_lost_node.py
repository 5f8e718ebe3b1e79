"""A server on a lost node is replaced: the test kubelet kills the pod's containers and
writes what a node controller would (phase ``Unknown``; or the taint manager's
``DisruptionTarget`` condition), the user's status turns ``failed`` (lost), and the next
``environment()`` builds a new pod that answers calls. A bare pod is never restarted by
Kubernetes itself, so this is the only way the user gets a server back."""

from __future__ import annotations

import pytest

import zexec
from tests.helpers.stack import wait_for
from tests.k8s_e2e import podman

pytestmark = pytest.mark.timeout(900)

#: What the control plane writes when the node goes: the node lifecycle controller of
#: older clusters (phase Unknown), the taint manager about to evict (DisruptionTarget).
LOSSES = ({"unknown": True, "disruption": False}, {"unknown": False, "disruption": True})


def test_a_server_on_a_lost_node_is_replaced_by_the_next_spawn(cluster):
    conn = zexec.connect(cluster.ep_url, cluster.tokens["erin"])
    try:
        assert conn.environment([], progress=False, timeout=300)["phase"] == "ready"
        assert conn.client.call(pow, 2, 5) == 32
        for how in LOSSES:
            old = cluster.pod_of("erin")
            ns, name = old["metadata"]["namespace"], old["metadata"]["name"]
            written = cluster.kubelet.lose_node(ns, name, **how)
            assert written["phase"] == ("Unknown" if how["unknown"] else "Running")
            # podman's view: the server container died with its node.
            gone = cluster.containers_of("erin")["server"]
            assert gone["State"] == "exited", gone["State"]
            st = conn.status()
            assert st["phase"] == "failed" and "server lost" in st["reason"], st
            # The same environment again: a new pod, not the stale status.
            st = conn.environment([], progress=False, timeout=300)
            assert st["phase"] == "ready", st
            new = cluster.pod_of("erin")
            assert new["metadata"]["name"] != name
            assert new["status"]["phase"] == "Running"
            assert conn.client.call(pow, 3, 3) == 27
            # podman's view: the lost pod's containers are removed, the new server runs.
            wait_for(lambda ns=ns, name=name: not podman.containers(ns, name),
                     timeout=180, interval=0.5, what="the lost pod's containers to be removed")
            server = cluster.containers_of("erin")["server"]
            assert server["State"] == "running"
            assert podman.runs_image(server["Names"][0], cluster.images["server"])
    finally:
        conn.terminate()
        conn.close()
