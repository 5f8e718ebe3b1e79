"""A server pod's compute resources from what the user asked for (the check that the
user namespaces' bounds admit the most the site allows is :func:`.quota.check_bounds`).

Without a request, a pod gets the site's ``ZEXEC_K8S_CPU_*`` / ``_MEMORY_*`` requests and
limits, as always. A request sets both the request and the limit to what was asked
(``cpus`` cores as millicores, ``memory`` MiB as ``Mi``): the pod gets what it asked for
and no more, the QoS class Kubernetes reserves for that. ``gpus`` become a limit on the
extended resource ``ZEXEC_K8S_GPU_RESOURCE`` (``nvidia.com/gpu``): extended resources
take limits only (the request follows). Ephemeral storage stays the site's.
"""

from __future__ import annotations

from typing import Any

from zexec.core.model import Resources
from zexec.core.resources import cpu_cores, memory_mib
from zexec.settings import KubernetesSettings


def container_resources(settings: KubernetesSettings, res: Resources,
                        gpus: bool = True) -> dict[str, Any]:
    """``resources`` of a server pod's container (``gpus=False``: an init container,
    which installs packages and needs no GPU)."""
    requests = {"cpu": settings.cpu_request, "memory": settings.memory_request,
                "ephemeral-storage": settings.ephemeral_storage_request}
    limits = {"cpu": settings.cpu_limit, "memory": settings.memory_limit,
              "ephemeral-storage": settings.ephemeral_storage_limit}
    if res.cpus is not None:
        requests["cpu"] = limits["cpu"] = f"{round(res.cpus * 1000)}m"
    if res.memory is not None:
        requests["memory"] = limits["memory"] = f"{res.memory}Mi"
    if gpus and res.gpus:
        limits[settings.gpu_resource] = str(res.gpus)
    return {"requests": requests, "limits": limits}


def granted(settings: KubernetesSettings, res: Resources) -> Resources:
    """What a pod with ``res`` gets: its limits (cores, MiB), GPUs and workers."""
    try:
        cpus = cpu_cores(settings.cpu_limit) if res.cpus is None else res.cpus
        memory = round(memory_mib(settings.memory_limit)) if res.memory is None else res.memory
    except ValueError:
        cpus, memory = res.cpus, res.memory  # an odd site quantity: say nothing wrong
    return Resources(cpus=cpus, memory=memory, gpus=res.gpus or 0,
                     workers=res.workers or settings.server_workers)
