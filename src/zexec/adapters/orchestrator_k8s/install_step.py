"""The server pod's install step: the init container that makes the user's venv and
installs the environment's requirements into it, with uv (the local orchestrator's
resolver) or pip, and the optional install cache volume shared between spawns."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from zexec.core.errors import ConfigurationError
from zexec.settings import KubernetesSettings

#: Where uv's cache volume is mounted in the install container.
CACHE_DIR = "/var/cache/zexec/uv"


def install_cache_source(settings: KubernetesSettings) -> dict[str, Any]:
    """The volume source of ``install_cache_volume`` (a JSON object such as
    ``{"persistentVolumeClaim": {"claimName": "zexec-uv-cache"}}``)."""
    try:
        source = json.loads(settings.install_cache_volume)
    except ValueError as exc:
        raise ConfigurationError(f"install_cache_volume is not JSON: {exc}") from None
    if not isinstance(source, dict) or len(source) != 1:
        raise ConfigurationError(
            "install_cache_volume must be one volume source, e.g. "
            '{"persistentVolumeClaim": {"claimName": "zexec-uv-cache"}}'
        )
    return source


def install_containers(
    settings: KubernetesSettings, common: dict[str, Any], base_env: list[dict[str, Any]],
    venv: str, requirements: str,
) -> list[dict[str, Any]]:
    """The init container ``install``: a venv seeing the image's packages (zexec among
    them) with the ConfigMap's requirements installed into it, by uv or pip (see
    :mod:`.install_env`; one container, not two: each costs a start).

    uv resolves like the local orchestrator and, given ``install_cache_volume``, shares
    its cache between spawns: a second spawn of an environment downloads and builds
    nothing. Copies, not hard links, out of the cache (another filesystem). A failure
    ends in the container's termination message (FallbackToLogsOnError), so the status
    carries the installer's own reason even where pod logs cannot be read."""
    if settings.installer == "uv":
        env = [
            {"name": "UV_PYTHON_DOWNLOADS", "value": "never"},
            {"name": "UV_LINK_MODE", "value": "copy"},
            {"name": "UV_NO_PROGRESS", "value": "1"},
            # The image's CA bundle (Debian's path, the official python images' too), as
            # pip uses: uv's built-in roots do not know a site's mirror or TLS proxy CA
            # (seen: "invalid peer certificate: UnknownIssuer").
            {"name": "SSL_CERT_FILE", "value": "/etc/ssl/certs/ca-certificates.crt"},
        ]
        if settings.install_cache_volume:
            env.append({"name": "UV_CACHE_DIR", "value": CACHE_DIR})
        else:
            env.append({"name": "UV_NO_CACHE", "value": "1"})
        if settings.pip_index_url:
            env.append({"name": "UV_INDEX_URL", "value": settings.pip_index_url})
    else:
        env = [{"name": "PIP_NO_CACHE_DIR", "value": "1"}]
        if settings.pip_index_url:
            env.append({"name": "PIP_INDEX_URL", "value": settings.pip_index_url})
    index = urlsplit(settings.pip_index_url)
    if index.scheme == "http" and index.hostname:
        # Both installers refuse a plain-HTTP index unless its host is trusted; such an
        # index is the in-cluster proxy the NetworkPolicy names.
        trusted = "UV_INSECURE_HOST" if settings.installer == "uv" else "PIP_TRUSTED_HOST"
        env.append({"name": trusted, "value": index.hostname})
    command = ["python", "-m", "zexec.adapters.orchestrator_k8s.install_env",
               "--installer", settings.installer, "--venv", venv, "-r", requirements]
    return [{"name": "install", **common, "command": command, "env": base_env + env,
             "terminationMessagePolicy": "FallbackToLogsOnError"}]
