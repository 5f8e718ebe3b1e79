"""The podman command line, as the test kubelet and the tests use it.

Every container the test kubelet starts carries the labels a CRI runtime puts on a
Kubernetes container (``io.kubernetes.pod.namespace`` / ``.name``, ``.container.name``),
so tests can ask podman which containers belong to which pod.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

POD_NS = "io.kubernetes.pod.namespace"
POD_NAME = "io.kubernetes.pod.name"
CONTAINER = "io.kubernetes.container.name"
#: Only containers carrying this label are ever removed by the test kubelet.
OWNER = "zexec.io/test-kubelet"
#: The image a container runs (containers started from an image's root filesystem with
#: ``--rootfs`` have no image of their own in podman's records).
IMAGE = "io.kubernetes.container.image"


def available() -> str | None:
    """Why podman cannot run containers here, or None when it can."""
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/test-k8s-e2e.sh installs it with apt-get)"
    try:
        run("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"podman does not work here: {exc}"
    return None


def run(*args: str, timeout: float = 120, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)
    if check and proc.returncode != 0:
        raise PodmanError(proc)
    return proc


class PodmanError(subprocess.CalledProcessError):
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        super().__init__(proc.returncode, proc.args, proc.stdout, proc.stderr)

    def __str__(self) -> str:
        return f"{super().__str__()}: {self.stderr.strip()[-2000:]}"


def containers(namespace: str | None = None, pod: str | None = None,
               all_states: bool = True) -> list[dict[str, Any]]:
    """``podman ps --format json`` of the test kubelet's containers (optionally of one
    namespace / pod)."""
    args = ["ps", "--format", "json", "--filter", f"label={OWNER}=1"]
    if all_states:
        args.append("--all")
    if namespace:
        args += ["--filter", f"label={POD_NS}={namespace}"]
    if pod:
        args += ["--filter", f"label={POD_NAME}={pod}"]
    return json.loads(run(*args).stdout or "[]")


def inspect(name: str) -> dict[str, Any] | None:
    proc = run("container", "inspect", name, check=False)
    if proc.returncode != 0:
        return None
    found = json.loads(proc.stdout or "[]")
    return found[0] if found else None


def logs(name: str, tail: int | None = None) -> str:
    args = ["logs"]
    if tail is not None:
        args += ["--tail", str(tail)]
    proc = run(*args, name, check=False)
    return proc.stdout + proc.stderr


@dataclass(frozen=True)
class Image:
    """An image's root filesystem (``podman image mount``: with vfs, the image's own
    directory) and the parts of its config a runtime applies."""

    ref: str
    rootfs: str
    env: tuple[str, ...]
    user: str
    workdir: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]


_images: dict[str, Image] = {}
_images_lock = threading.Lock()


def image(ref: str) -> Image | None:
    """The mounted image ``ref`` (None when podman has no such image)."""
    with _images_lock:
        if ref not in _images:
            if run("image", "exists", ref, check=False).returncode != 0:
                return None
            info = json.loads(run("image", "inspect", ref).stdout)[0]
            cfg = info.get("Config") or {}
            _images[ref] = Image(
                ref, run("image", "mount", ref).stdout.strip(), tuple(cfg.get("Env") or ()),
                cfg.get("User") or "", cfg.get("WorkingDir") or "",
                tuple(cfg.get("Entrypoint") or ()), tuple(cfg.get("Cmd") or ()))
        return _images[ref]


def unmount_images() -> None:
    with _images_lock:
        for ref in list(_images):
            run("image", "unmount", ref, check=False)
            del _images[ref]


def runs_image(container: str, ref: str) -> bool:
    """Whether podman runs ``container`` from image ``ref``'s root filesystem."""
    info = inspect(container) or {}
    mounted = image(ref)
    return (mounted is not None and info.get("Rootfs") == mounted.rootfs
            and (info.get("Config") or {}).get("Labels", {}).get(IMAGE) == ref)
