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
    volume (a hostPath here, standing for an NFS/CSI volume; owned by the pods' uid)."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from tests.k8s_e2e.cluster import running_cluster

    cache = Path(tempfile.mkdtemp(prefix="zexec-e2e-uv-cache-"))
    shutil.chown(cache, 1000, 1000)
    volume = json.dumps({"hostPath": {"path": str(cache), "type": "Directory"}})
    with running_cluster(users=("alice", "bob", "carol", "dave", "erin"),
                         ZEXEC_K8S_INSTALL_CACHE_VOLUME=volume,
                         ZEXEC_DEPLOY_IDLE_TIMEOUT=str(IDLE_TIMEOUT)) as c:
        c.cache_dir = cache
        yield c
    shutil.rmtree(cache, ignore_errors=True)
