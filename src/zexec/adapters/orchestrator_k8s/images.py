"""What the kubelet pulls for a server: its image (by digest when one is configured),
and the registry pull secrets, copied into each user namespace.

A pod can only name pull secrets of its own namespace. The chart mounts the Deploy API's
(``imagePullSecrets`` and ``deployApi.kubernetes.imagePullSecrets``) into its pod, one
directory per secret holding ``.dockerconfigjson`` (``ZEXEC_K8S_PULL_SECRETS_DIR``); the
orchestrator creates each, under the same name, in the user's namespace before the pod
and lists them in the pod's ``imagePullSecrets``. Reading them from files keeps the
Deploy API without any right to read Secrets through the API.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from zexec.adapters.orchestrator_k8s.manifests import parse_labels
from zexec.settings import KubernetesSettings

KEY = ".dockerconfigjson"


def server_image(settings: KubernetesSettings, python: str) -> str:
    """``server_image`` for ``python``; by digest when ``server_image_digests`` lists it
    (``repo:tag`` -> ``repo@sha256:...``)."""
    image = settings.server_image.format(python=python)
    digest = parse_labels(settings.server_image_digests).get(python)
    if not digest:
        return image
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return f"{name}@{digest}"


def read(directory: str) -> dict[str, bytes]:
    """Secret name -> its ``.dockerconfigjson``, for each ``<directory>/<name>/``."""
    if not directory or not Path(directory).is_dir():
        return {}
    return {
        d.name: (d / KEY).read_bytes()
        for d in sorted(Path(directory).iterdir())
        if (d / KEY).is_file()
    }


def build_secret(namespace: str, name: str, config: bytes,
                 labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {KEY: base64.b64encode(config).decode()},
    }


def copy(core_api: Any, namespace: str, directory: str, labels: dict[str, str]) -> list[str]:
    """Create the pull secrets in ``namespace`` (existing ones are kept); their names."""
    names = []
    for name, config in read(directory).items():
        try:
            core_api.create_namespaced_secret(
                namespace, build_secret(namespace, name, config, labels), _preload_content=False
            )
        except ApiException as e:
            if e.status != 409:
                raise
        names.append(name)
    return names
