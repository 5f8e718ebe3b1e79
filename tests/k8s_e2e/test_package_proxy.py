"""The chart's package path for real: ``deployApi.kubernetes.pipIndexUrl`` on a
plain-HTTP index proxy (here on loopback, :mod:`tests.k8s_e2e.index`, devpi's URL
layout) with the ``packageProxy`` rule. A spawn installs a requirement that exists only
in that index, so it can only have come through it; the install step trusted the plain
HTTP host (``UV_INSECURE_HOST``), as the chart's default in-cluster proxy needs."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

import zexec
from tests.k8s_e2e import podman

pytestmark = pytest.mark.timeout(900)


def test_a_requirement_installs_through_the_index_proxy(cluster):
    proxy = cluster.index
    before = len(proxy.requests)
    conn = zexec.connect(cluster.ep_url, cluster.tokens["fay"])
    try:
        st = conn.environment(["zexec-e2e-probe==1.0", "six==1.16.0"], progress=False,
                              timeout=600)
        assert st["phase"] == "ready", st
        assert conn.client.call(lambda: __import__("zexec_e2e_probe").VALUE) == \
            "from the loopback index"
        asked = proxy.requests[before:]
        assert "/root/pypi/+simple/zexec-e2e-probe/" in asked, asked
        assert "/files/zexec_e2e_probe-1.0-py3-none-any.whl" in asked, asked
        # The pod's install step: the chart's index URL, its plain-HTTP host trusted.
        pod = cluster.pod_of("fay")
        (install,) = pod["spec"]["initContainers"]
        env = {e["name"]: e.get("value") for e in install["env"]}
        assert env["UV_INDEX_URL"] == proxy.url
        assert env["UV_INSECURE_HOST"] == urlsplit(proxy.url).hostname
        log = podman.logs(cluster.containers_of("fay")["install"]["Names"][0])
        assert "+ zexec-e2e-probe==1.0" in log, log
    finally:
        conn.terminate()
        conn.close()
