"""Fast environments: uv in the install init container, with its cache on a volume every
server pod shares, so a second spawn of an environment, by another user, downloads and
builds nothing (the cache is written under the pods' securityContext, uid 1000)."""

from __future__ import annotations

import time

import pytest

import zexec
from tests.k8s_e2e import podman

pytestmark = pytest.mark.timeout(900)

ENV = ["six==1.16.0", "packaging==24.1"]


def spawn(cluster, user: str) -> tuple[float, str]:
    """(seconds from environment() to the first result, the install container's log)."""
    conn = zexec.connect(cluster.ep_url, cluster.tokens[user])
    try:
        started = time.perf_counter()
        conn.environment(ENV, progress=False, timeout=600)
        assert conn.client.call(lambda: __import__("six").__version__) == "1.16.0"
        took = time.perf_counter() - started
        log = podman.logs(cluster.containers_of(user)["install"]["Names"][0])
        conn.terminate()
    finally:
        conn.close()
    return took, log


def test_a_second_spawn_by_another_user_downloads_nothing(cluster):
    first_took, first = spawn(cluster, "carol")
    assert "Prepared 2 packages" in first  # downloaded and unpacked into the cache
    # The cache was written by the pod's uid, not root.
    owners = {p.stat().st_uid for p in cluster.cache_dir.rglob("*")}
    assert owners == {1000}, owners

    second_took, second = spawn(cluster, "dave")
    assert "+ six==1.16.0" in second and "+ packaging==24.1" in second
    assert "Prepared" not in second and "Download" not in second, second
    print(f"spawn -> first result: first {first_took:.1f}s, cached {second_took:.1f}s")
