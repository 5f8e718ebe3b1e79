"""The podman command line, as the test kubelet and the tests use it.

Every container the test kubelet starts carries the labels a CRI runtime puts on a
Kubernetes container (``io.kubernetes.pod.namespace`` / ``.name``, ``.container.name``),
so tests can ask podman which containers belong to which pod.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

POD_NS = "io.kubernetes.pod.namespace"
POD_NAME = "io.kubernetes.pod.name"
CONTAINER = "io.kubernetes.container.name"
#: Only containers carrying this label are ever removed by the test kubelet.
OWNER = "zexec.io/test-kubelet"


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
