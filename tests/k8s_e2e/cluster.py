"""A Kubernetes cluster on one machine, for the end-to-end tests.

* the API server: kmock's emulator (tests/integration/kmock_support.py), on loopback;
* the node: :class:`tests.k8s_e2e.kubelet.TestKubelet`, running the Pods as podman
  containers in the host network;
* the Job controller: :class:`tests.helpers.k8s_jobs.TestJobController`, making each
  server Job's pod (and a new one when a pod is disrupted), as kube-controller-manager's;
* the control plane: broker, Deploy API (``ZEXEC_DEPLOY_ORCHESTRATOR=kubernetes``, with a
  kubeconfig pointing at the emulator) and EP API, either as containers of the apps image
  from the chart's rendered Deployments (``control_plane="chart"``, see
  :mod:`tests.k8s_e2e.chart_plane`) or as host processes (``"host"``).

The images come from scripts/k8s-e2e-images.sh (``ZEXEC_E2E_IMAGES`` lists them, as the
script prints them: ``key=image`` lines; without it the fixture runs the script).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.helpers.k8s_jobs import TestJobController
from tests.helpers.stack import ADMIN, SECRET, _env, free_port, wait_for
from tests.integration.kmock_support import CascadingEmulator, running_emulator
from tests.k8s_e2e import podman
from tests.k8s_e2e.kubelet import TestKubelet
from zexec.adapters.orchestrator_k8s import jobs
from zexec.adapters.orchestrator_k8s.manifests import namespace_name
from zexec.adapters.orchestrator_k8s.pool_rules import locate
from zexec.apps.devidp.tokens import generate_tokens, user_id_for
from zexec.settings import KubernetesSettings

REPO = Path(__file__).resolve().parents[2]
IMAGES_SCRIPT = REPO / "scripts" / "k8s-e2e-images.sh"


def images() -> dict[str, str]:
    """``{"base": ..., "apps": ..., "server": ...}``: the images the tests run."""
    text = os.environ.get("ZEXEC_E2E_IMAGES", "")
    if not text:
        text = subprocess.run(["bash", str(IMAGES_SCRIPT)], check=True, capture_output=True,
                              text=True, timeout=1800).stdout
    return dict(line.split("=", 1) for line in text.replace(";", "\n").split() if "=" in line)


def kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: e2e\n"
        f"clusters: [{{name: e2e, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: e2e, user: {token: e2e}}]\n"
        "contexts: [{name: e2e, context: {cluster: e2e, user: e2e}}]\n"
    )
    return path


@dataclass
class Cluster:
    """What a test needs: the URLs, tokens and handles of the running cluster."""

    workdir: Path
    emulator: CascadingEmulator
    api: object
    api_url: str
    kubelet: TestKubelet
    images: dict[str, str]
    jobs: TestJobController | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    ep_url: str = ""
    deploy_url: str = ""
    broker_frontend: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    #: The uv cache volume's directory, when the cluster has one.
    cache_dir: Path | None = None
    #: The package index proxy the pods install from, when the cluster has one.
    index: Any = None
    #: The broker's control port credential (the chart makes its own).
    admin_token: str = ADMIN

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def job_of(self, user: str) -> tuple[str, str]:
        """(namespace, name) of the user's current server Job."""
        core = client.CoreV1Api(self.api)
        ns = namespace_name(KubernetesSettings().namespace_prefix, user_id_for(user))
        return ns, core.read_namespace(ns).metadata.annotations["zexec.io/pod"]

    def pod_of(self, user: str) -> dict:
        """The user's current server pod (of its Job, or an adopted warm-pool pod,
        named ``<pool namespace>/<pod>``), as the API server has it."""
        core = client.CoreV1Api(self.api)
        ns, job = self.job_of(user)
        where, name = locate(job, ns)
        if where != ns:
            return json.loads(core.read_namespaced_pod(name, where, _preload_content=False).data)
        items = json.loads(core.list_namespaced_pod(
            ns, label_selector=jobs.job_selector(job), _preload_content=False).data)["items"]
        pod = jobs.current_pod(jobs.pods_of(job, items))
        assert pod is not None, f"server job {ns}/{job} has no pod yet"
        return pod

    def containers_of(self, user: str) -> dict[str, dict]:
        """podman's containers of the user's current pod, by container name."""
        pod = self.pod_of(user)
        found = podman.containers(pod["metadata"]["namespace"], pod["metadata"]["name"])
        return {c["Labels"][podman.CONTAINER]: c for c in found}


def control_env(c: Cluster, settings: dict[str, str]) -> dict[str, str]:
    """The ZEXEC_* settings the three control-plane apps share on this cluster."""
    p = c.ports
    return {
        "ZEXEC_AUTH_MODE": "static",
        "ZEXEC_AUTH_STATIC_FILE": str(c.workdir / "tokens.json"),
        "ZEXEC_BROKER_HOST": "127.0.0.1",
        "ZEXEC_BROKER_FRONTEND_PORT": str(p["frontend"]),
        "ZEXEC_BROKER_BACKEND_PORT": str(p["backend"]),
        "ZEXEC_BROKER_CONTROL_PORT": str(p["control"]),
        "ZEXEC_BROKER_SERVER_SECRET": SECRET,
        "ZEXEC_BROKER_ADMIN_TOKEN": ADMIN,
        "ZEXEC_DEPLOY_HOST": "127.0.0.1",
        "ZEXEC_DEPLOY_PORT": str(p["deploy"]),
        "ZEXEC_DEPLOY_PREFIX": "/rexec",
        "ZEXEC_DEPLOY_ORCHESTRATOR": "kubernetes",
        "ZEXEC_DEPLOY_STATE_DIR": str(c.workdir / "deploy-state"),
        "ZEXEC_DEPLOY_BROKER_EXTERNAL_HOST": "127.0.0.1",
        "ZEXEC_DEPLOY_BROKER_EXTERNAL_PORT": str(p["frontend"]),
        "ZEXEC_DEPLOY_IDLE_TIMEOUT": "600",
        "ZEXEC_DEPLOY_LEGACY_SPAWN_WAIT": "600",
        "ZEXEC_EP_HOST": "127.0.0.1",
        "ZEXEC_EP_PORT": str(p["ep"]),
        "ZEXEC_EP_DEPLOY_API_URL": f"http://127.0.0.1:{p['deploy']}/rexec",
        "ZEXEC_K8S_SERVER_IMAGE": c.images["server"],
        "ZEXEC_K8S_IMAGE_PULL_POLICY": "Never",
        "ZEXEC_K8S_BROKER_BACKEND_URL": f"tcp://127.0.0.1:{p['backend']}",
        "KUBECONFIG": str(c.workdir / "kubeconfig"),
        # Warm-pool pods (when a test asks for a pool) reach the Deploy API on the host.
        "ZEXEC_K8S_POOL_DEPLOY_URL": f"http://127.0.0.1:{p['deploy']}/rexec",
        **settings,
    }


def _start_host(c: Cluster, settings: dict[str, str]) -> None:
    env = _env(**control_env(c, settings))
    for name, module in (("broker", "zexec.apps.broker"), ("deploy-api", "zexec.apps.deploy_api"),
                         ("ep-api", "zexec.apps.ep_api")):
        log = open(c.workdir / f"{name}.log", "ab")
        c.procs[name] = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)


def _wait_healthy(c: Cluster) -> None:
    import httpx

    def up() -> bool:
        for name, proc in c.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {c.log(name)}")
        try:
            return (httpx.get(f"{c.deploy_url}/healthz", timeout=2).status_code == 200
                    and httpx.get(f"{c.ep_url}/status/", timeout=2).status_code < 500)
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=120, interval=0.2, what="the control plane to answer")


@contextmanager
def running_cluster(control_plane: str = "", users: tuple[str, ...] = ("alice", "bob", "carol"),
                    emulator: type[CascadingEmulator] = CascadingEmulator,
                    **settings: str) -> Iterator[Cluster]:
    """The whole cluster; ``users`` get tokens; ``settings`` are extra ZEXEC_* for the
    control plane. ``control_plane``: ``chart`` (default, or ``ZEXEC_E2E_CONTROL_PLANE``)
    or ``host``. ``emulator``: the API server's class (benchmarks: PruningEmulator)."""
    control_plane = control_plane or os.environ.get("ZEXEC_E2E_CONTROL_PLANE", "chart")
    workdir = Path(tempfile.mkdtemp(prefix="zexec-k8s-e2e-"))
    with ExitStack() as stack:
        emulator, api = stack.enter_context(running_emulator(emulator))
        url = api.configuration.host
        kubelet = TestKubelet(api, workdir / "pods").start()
        kubelet.serve_logs(emulator)
        stack.callback(kubelet.close)
        c = Cluster(workdir, emulator, api, url, kubelet, images())
        c.jobs = TestJobController(api).start()
        stack.callback(c.jobs.close)
        # Watches: both controllers react to a write at once, as a cluster's do.
        emulator.on_write += [kubelet.wake, c.jobs.wake]
        kubeconfig(workdir / "kubeconfig", url)
        c.tokens = generate_tokens(workdir / "tokens.json", users)
        c.ports = {k: free_port() for k in ("frontend", "backend", "control", "deploy", "ep")}
        c.deploy_url = f"http://127.0.0.1:{c.ports['deploy']}/rexec"
        c.ep_url = f"http://127.0.0.1:{c.ports['ep']}"
        c.broker_frontend = f"tcp://127.0.0.1:{c.ports['frontend']}"
        stack.callback(_stop_procs, c)
        if control_plane == "chart":
            from tests.k8s_e2e.chart_plane import start_chart_plane

            stack.enter_context(start_chart_plane(c, settings))
        else:
            _start_host(c, settings)
        _wait_healthy(c)
        yield c


def _stop_procs(c: Cluster) -> None:
    for proc in c.procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in c.procs.values():
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
