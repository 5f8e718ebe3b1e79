"""The one-machine cluster tests run only from scripts/test-k8s-e2e.sh (which installs
podman and builds the images first): the main suite skips them."""

from __future__ import annotations

import os
from contextlib import ExitStack

import pytest

from tests.k8s_e2e import podman

#: Seconds without calls before a server exits (the Deploy API's idle timeout): short, so
#: test_idle_culling sees one exit; the other tests never leave a server idle that long.
IDLE_TIMEOUT = 30


def pytest_collection_modifyitems(config, items):
    if os.environ.get("ZEXEC_K8S_E2E") == "1":
        why = podman.available()
    else:
        why = "one-machine Kubernetes tests: run `bash scripts/test-k8s-e2e.sh`"
    if why:
        skip = pytest.mark.skip(reason=why)
        for item in items:
            if "k8s_e2e" in item.nodeid:
                item.add_marker(skip)


class OneCluster:
    """One cluster on the machine at a time: podman's pod and container names come from the
    chart's release and the users' namespaces, so two clusters' pods would collide. A
    fixture asking for another configuration stops the running cluster first; modules run
    in file order, so the default cluster starts once and the warm pool's (last) once."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.stack: ExitStack | None = None
        self.current = None

    def get(self, key: str, start):
        """The cluster made by ``start(stack)`` for ``key``, starting it (and stopping any
        other) when it is not the running one."""
        if self.key != key:
            self.close()
            self.stack = ExitStack()
            self.current = start(self.stack)
            self.key = key
        return self.current

    def close(self) -> None:
        if self.stack is not None:
            stack, self.stack, self.key, self.current = self.stack, None, None, None
            stack.close()


@pytest.fixture(scope="session")
def clusters():
    slot = OneCluster()
    yield slot
    slot.close()


@pytest.fixture(scope="module")
def cluster(clusters):
    """The default cluster, configured as a site would: uv with a shared cache
    volume (a hostPath here, standing for an NFS/CSI volume; owned by the pods' uid), and
    the chart's package path, ``pipIndexUrl`` on a plain-HTTP index proxy (one on
    loopback, :mod:`tests.k8s_e2e.index`: six from ``pip download`` and a probe package
    found nowhere else; other projects come from PyPI through it)."""
    return clusters.get("default", _default_cluster)


def _default_cluster(stack: ExitStack):
    import json
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from tests.integration.kmock_support import PruningEmulator
    from tests.k8s_e2e import index
    from tests.k8s_e2e.cluster import running_cluster

    cache = Path(tempfile.mkdtemp(prefix="zexec-e2e-uv-cache-"))
    stack.callback(shutil.rmtree, cache, ignore_errors=True)
    shutil.chown(cache, 1000, 1000)
    files = Path(tempfile.mkdtemp(prefix="zexec-e2e-index-"))
    stack.callback(shutil.rmtree, files, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--dest", str(files), "six==1.16.0"],
                   check=True, timeout=300)
    index.probe_wheel(files)
    volume = json.dumps({"hostPath": {"path": str(cache), "type": "Directory"}})
    proxy = stack.enter_context(index.serving(files))
    c = stack.enter_context(running_cluster(  # kmock without its growing memory
        users=("alice", "bob", "carol", "dave", "erin", "fay", "gus"), emulator=PruningEmulator,
        ZEXEC_K8S_INSTALL_CACHE_VOLUME=volume, ZEXEC_K8S_PIP_INDEX_URL=proxy.url,
        ZEXEC_DEPLOY_IDLE_TIMEOUT=str(IDLE_TIMEOUT)))
    c.cache_dir = cache
    c.index = proxy
    return c
