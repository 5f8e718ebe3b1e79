"""The one-machine cluster tests run only from scripts/test-k8s-e2e.sh (which installs
podman and builds the images first): the main suite skips them."""

from __future__ import annotations

import os

import pytest

from tests.k8s_e2e import podman


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
