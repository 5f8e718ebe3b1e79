"""The warm pool on the one-machine cluster: with a pool of one, a user's
``zexec.connect`` + ``environment()`` adopts the waiting pool pod (the API names it in the
user's namespace; podman started no server container for the spawn), a call runs in it,
the pool is topped up, and the next user adopts another pod; one user's credential never
reaches another's pod nor the pool's objects."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

import zexec
from tests.helpers.stack import SECRET, wait_for
from tests.k8s_e2e import podman
from tests.k8s_e2e.cluster import running_cluster
from zexec.adapters.orchestrator_k8s import pool_rules as rules
from zexec.adapters.orchestrator_k8s.manifests import namespace_name
from zexec.apps.devidp.tokens import user_id_for
from zexec.core.protocol import server_credential

pytestmark = pytest.mark.timeout(900)
POOL_NS = "zexec-pool"


@pytest.fixture(scope="module")
def pooled(clusters):
    """A cluster of its own (the pool changes every default spawn), replacing the default
    one: only one runs on the machine at a time (conftest.OneCluster)."""
    return clusters.get("pool", lambda stack: stack.enter_context(
        running_cluster(users=("gus", "hal"), ZEXEC_K8S_POOL_SIZE="1")))


def pool_pods(c) -> list[dict]:
    found = client.CoreV1Api(c.api).list_namespaced_pod(POOL_NS, _preload_content=False)
    return json.loads(found.data)["items"]


def waiting_spare(c, not_: set[str] = frozenset()) -> str:
    """The name of the pool's spare pod once its server waits for adoption."""
    def spare():
        return [p["metadata"]["name"] for p in pool_pods(c)
                if rules.ANN_WAITING in (p["metadata"].get("annotations") or {})
                and rules.is_spare(p) and p["metadata"]["name"] not in not_]
    (name,) = wait_for(spare, timeout=300, interval=0.5, what="a waiting pool pod")
    return name


def server_containers(ns: str, pod: str | None = None) -> list[dict]:
    return [x for x in podman.containers(ns, pod) if x["Labels"][podman.CONTAINER] == "server"]


def test_spawns_adopt_pool_pods_one_user_each(pooled):
    c = pooled
    first = waiting_spare(c)
    gus_ns, hal_ns = (namespace_name("zexec-u-", user_id_for(u)) for u in ("gus", "hal"))
    started = {x["Id"] for x in podman.containers()}
    gus = zexec.connect(c.ep_url, c.tokens["gus"])
    hal = zexec.connect(c.ep_url, c.tokens["hal"])
    try:
        assert gus.environment([], progress=False, timeout=300)["phase"] == "ready"
        assert gus.client.call(pow, 2, 10) == 1024
        # The API: gus's namespace names the pool pod, relabelled for gus.
        pod = c.pod_of("gus")
        assert (pod["metadata"]["namespace"], pod["metadata"]["name"]) == (POOL_NS, first)
        assert pod["metadata"]["labels"]["zexec.io/user"] == gus_ns.removeprefix("zexec-u-")
        # podman: no container was started for gus's spawn; the call ran in the pool
        # pod's server, started before gus asked.
        assert podman.containers(gus_ns) == []
        (server,) = server_containers(POOL_NS, first)
        assert server["Id"] in started and server["State"] == "running"
        # The pool is topped up with another pod, which hal adopts.
        second = waiting_spare(c, not_={first})
        assert hal.environment([], progress=False, timeout=300)["phase"] == "ready"
        assert hal.client.call(pow, 3, 3) == 27
        assert c.pod_of("hal")["metadata"]["name"] == second != first
        assert podman.containers(hal_ns) == []
        # gus's credential is nowhere but in gus's own namespace: not in hal's server
        # container, not on any pool object in the API.
        cred = server_credential(SECRET.encode(), user_id_for("gus"))
        (hal_server,) = server_containers(POOL_NS, second)
        assert cred not in json.dumps(podman.inspect(hal_server["Names"][0]))
        pool_objects = [o.raw for (_res, ns, _n), o in list(c.emulator.objects.items())
                        if ns == POOL_NS and not o.deleted]
        assert pool_objects and cred not in json.dumps(pool_objects)
        # terminate removes gus's adopted pod (it lives in the pool's namespace).
        gus.terminate()
        wait_for(lambda: first not in {p["metadata"]["name"] for p in pool_pods(c)},
                 timeout=120, interval=0.5, what="gus's adopted pod to be deleted")
        wait_for(lambda: not server_containers(POOL_NS, first), timeout=180, interval=0.5,
                 what="gus's pool pod containers to be removed")
        assert hal.client.call(pow, 2, 2) == 4  # hal's server is untouched
    finally:
        hal.terminate()
        gus.close()
        hal.close()
