"""The one-machine cluster tests run only from scripts/test-k8s-e2e.sh (which installs
podman and builds the images first): the main suite skips them."""

from __future__ import annotations

import os

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


@pytest.fixture(scope="session")
def cluster():
    """One cluster for the session, configured as a site would: uv with a shared cache
    volume (a hostPath here, standing for an NFS/CSI volume; owned by the pods' uid), and
    the chart's package path, ``pipIndexUrl`` on a plain-HTTP index proxy (one on
    loopback, :mod:`tests.k8s_e2e.index`: six from ``pip download`` and a probe package
    found nowhere else; other projects come from PyPI through it)."""
    import json
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from tests.k8s_e2e import index
    from tests.k8s_e2e.cluster import running_cluster

    cache = Path(tempfile.mkdtemp(prefix="zexec-e2e-uv-cache-"))
    shutil.chown(cache, 1000, 1000)
    files = Path(tempfile.mkdtemp(prefix="zexec-e2e-index-"))
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary=:all:", "--dest", str(files), "six==1.16.0"],
                   check=True, timeout=300)
    index.probe_wheel(files)
    volume = json.dumps({"hostPath": {"path": str(cache), "type": "Directory"}})
    with index.serving(files) as proxy, running_cluster(
            users=("alice", "bob", "carol", "dave", "erin", "fay", "gus"),
            ZEXEC_K8S_INSTALL_CACHE_VOLUME=volume, ZEXEC_K8S_PIP_INDEX_URL=proxy.url,
            ZEXEC_DEPLOY_IDLE_TIMEOUT=str(IDLE_TIMEOUT)) as c:
        c.cache_dir = cache
        c.index = proxy
        yield c
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(files, ignore_errors=True)
