"""The control plane as containers, from the chart's own rendered Deployments.

``helm template`` renders deploy/helm/zexec with this cluster's values (the apps image
built here, ports chosen free, the server image and broker backend on loopback), and
``podman kube play`` runs the broker, Deploy API and EP API Deployments. What differs
from a real cluster is patched into the rendered pods, and only that:

* ``hostNetwork: true`` without ``ports`` (podman refuses mappings there; Services and cluster DNS do not exist here; every component is
  on 127.0.0.1, so ``extraEnv`` points the Deploy API at the broker's control port there);
* the Deploy API reads a kubeconfig for kmock (plain HTTP) instead of a service-account
  token (``KUBECONFIG`` plus a hostPath volume holding the file);
* Secrets: podman 4.3 needs them as its own secrets (JSON of the base64 ``data``) for
  ``secretKeyRef``, and writes secret *volumes* still base64-encoded (and panics on a
  secret volume without ``optional``), so secret volumes become hostPath directories of
  the decoded files;
* identity: the development IdP on the host (``global.auth.mode=http-post``).
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.helpers.stack import _env, free_port
from tests.k8s_e2e import podman

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "zexec"
RELEASE, NAMESPACE = "zexec", "zexec"


def helm() -> str:
    out = subprocess.run(["bash", str(REPO / "scripts" / "k8s-tools.sh")], check=True,
                         capture_output=True, text=True, timeout=600).stdout
    return str(Path(out.strip().splitlines()[-1]) / "helm")


def values(c: Any, idp_url: str, settings: dict[str, str]) -> dict[str, Any]:
    p = c.ports
    repo, tag = c.images["apps"].rsplit(":", 1)
    settings = dict(settings)
    # Settings the chart has values for go through those values (so the tests exercise
    # the chart's rendering of them); any other through extraEnv.
    kube: dict[str, Any] = {}
    if "ZEXEC_K8S_INSTALLER" in settings:
        kube["installer"] = settings.pop("ZEXEC_K8S_INSTALLER")
    if "ZEXEC_K8S_INSTALL_CACHE_VOLUME" in settings:
        kube["installCacheVolume"] = json.loads(settings.pop("ZEXEC_K8S_INSTALL_CACHE_VOLUME"))
    if "ZEXEC_K8S_PIP_INDEX_URL" in settings:
        # The chart's package path: pipIndexUrl reached through the packageProxy rule
        # (on the index's own port; NetworkPolicies are not enforced on one machine).
        kube["pipIndexUrl"] = settings.pop("ZEXEC_K8S_PIP_INDEX_URL")
        kube["packageProxy"] = {"enabled": True,
                                "ports": [urlsplit(kube["pipIndexUrl"]).port or 80]}
    # The warm pool only where a test asks for one (its pods would be containers every
    # other test sees); the pool pods reach the Deploy API on the host network.
    kube["warmPool"] = {"enabled": False, "size": 1}
    if "ZEXEC_K8S_POOL_SIZE" in settings:
        reqs = settings.pop("ZEXEC_K8S_POOL_REQUIREMENTS", "")
        kube["warmPool"] = {"enabled": True, "size": int(settings.pop("ZEXEC_K8S_POOL_SIZE")),
                            "requirements": [r for r in reqs.split(",") if r],
                            "deployUrl": f"http://127.0.0.1:{p['deploy']}/rexec"}
    idle = int(settings.pop("ZEXEC_DEPLOY_IDLE_TIMEOUT", "600"))
    k8s_env = [{"name": k, "value": v} for k, v in settings.items()]
    return {
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "global": {"auth": {"mode": "http-post", "url": idp_url}},
        "broker": {
            "ports": {"frontend": p["frontend"], "backend": p["backend"],
                      "control": p["control"], "secure": p["secure"]},
            "external": {"host": "127.0.0.1", "port": p["frontend"], "securePort": p["secure"]},
            "drainTimeout": 2,
        },
        "deployApi": {
            "idleTimeout": idle,
            # One machine, host network: a second replica could not bind the same port.
            "replicas": 1,
            "kubernetes": {
                # Without an index given, the pods reach PyPI the way this machine does
                # (host network), not through the chart's default in-cluster proxy.
                "pipIndexUrl": "",
                "packageProxy": {"enabled": False},
                "serverImage": c.images["server"],
                "imagePullPolicy": "Never",
                "brokerBackendUrl": f"tcp://127.0.0.1:{p['backend']}",
                **kube,
            },
            "extraEnv": [
                {"name": "ZEXEC_DEPLOY_HOST", "value": "127.0.0.1"},
                {"name": "ZEXEC_DEPLOY_PORT", "value": str(p["deploy"])},
                {"name": "ZEXEC_BROKER_HOST", "value": "127.0.0.1"},
                {"name": "KUBECONFIG", "value": "/etc/zexec/kube/kubeconfig"},
                *k8s_env,
            ],
        },
        "epApi": {
            "deployApiUrl": f"http://127.0.0.1:{p['deploy']}/rexec",
            "autoscaling": {"enabled": False},
            "replicas": 1,
            "extraEnv": [{"name": "ZEXEC_EP_HOST", "value": "127.0.0.1"},
                         {"name": "ZEXEC_EP_PORT", "value": str(p["ep"])}],
        },
    }


def render(c: Any, idp_url: str, settings: dict[str, str]) -> list[dict[str, Any]]:
    vals = c.workdir / "chart-values.yaml"
    vals.write_text(yaml.safe_dump(values(c, idp_url, settings)))
    out = subprocess.run([helm(), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                          "-f", str(vals)], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def adapt(docs: list[dict[str, Any]], workdir: Path) -> tuple[list[dict[str, Any]],
                                                              dict[str, dict[str, str]]]:
    """(Deployments patched for one machine, {secret name: data}) from the rendered chart."""
    secrets = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "Secret"}
    deployments = []
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        d = copy.deepcopy(d)
        pod = d["spec"]["template"]["spec"]
        pod["hostNetwork"] = True
        for ctr in pod["containers"]:
            _ports_by_number(ctr)
        for v in pod.get("volumes") or []:
            if "secret" in v:
                src = v.pop("secret")
                path = workdir / "secret-volumes" / f"{d['metadata']['name']}-{v['name']}"
                path.mkdir(parents=True, exist_ok=True)
                data = secrets[src["secretName"]]
                items = src.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    f = path / item["path"]
                    f.write_bytes(base64.b64decode(data[item["key"]]))
                    f.chmod(0o444)
                path.chmod(0o755)
                v["hostPath"] = {"path": str(path), "type": "Directory"}
        if d["metadata"]["name"].endswith("deploy-api"):
            pod["volumes"].append({"name": "kube", "hostPath": {
                "path": str(workdir / "kube"), "type": "Directory"}})
            pod["containers"][0]["volumeMounts"].append(
                {"name": "kube", "mountPath": "/etc/zexec/kube", "readOnly": True})
        deployments.append(d)
    return deployments, secrets


def _ports_by_number(ctr: dict[str, Any]) -> None:
    """Drop ``ports`` (podman 4.3 refuses port mappings on the host network) after
    turning the probes' named ports into numbers."""
    named = {p["name"]: p["containerPort"] for p in ctr.pop("ports", []) if "name" in p}
    for key in ("readinessProbe", "livenessProbe", "startupProbe"):
        for kind in ("httpGet", "tcpSocket"):
            probe = (ctr.get(key) or {}).get(kind)
            if probe and isinstance(probe.get("port"), str):
                probe["port"] = named[probe["port"]]


@contextmanager
def start_chart_plane(c: Any, settings: dict[str, str]) -> Iterator[None]:
    c.ports["secure"] = free_port()
    idp_port = free_port()
    log = open(c.workdir / "devidp.log", "ab")
    c.procs["devidp"] = subprocess.Popen(
        [sys.executable, "-m", "zexec.apps.devidp", "--tokens-file",
         str(c.workdir / "tokens.json"), "--port", str(idp_port)],
        env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    kube = c.workdir / "kube"
    kube.mkdir()
    (kube / "kubeconfig").write_text((c.workdir / "kubeconfig").read_text())
    kube.chmod(0o755)
    (kube / "kubeconfig").chmod(0o644)
    c.workdir.chmod(0o755)  # the apps containers (uid 10001) read the files under it
    deployments, secrets = adapt(render(c, f"http://127.0.0.1:{idp_port}/auth", settings),
                                 c.workdir)
    c.admin_token = next(base64.b64decode(data["admin-token"]).decode()
                         for data in secrets.values() if "admin-token" in data)
    made = []
    manifest = c.workdir / "control-plane.yaml"
    try:
        for name, data in secrets.items():
            podman.run("secret", "rm", name, check=False)
            subprocess.run(["podman", "secret", "create", name, "-"], input=json.dumps(data),
                           capture_output=True, text=True, check=True, timeout=60)
            made.append(name)
        manifest.write_text(yaml.safe_dump_all(deployments))
        podman.run("kube", "play", str(manifest), timeout=300)
        yield
    finally:
        (c.workdir / "control-plane-logs.txt").write_text(control_plane_logs())
        podman.run("kube", "down", str(manifest), check=False, timeout=300)
        for name in made:
            podman.run("secret", "rm", name, check=False)


def control_plane_logs() -> str:
    """The last lines of every control-plane container (``<deployment>-pod-0-<name>``)."""
    out = []
    for ctr in json.loads(podman.run("ps", "-a", "--format", "json", check=False).stdout
                          or "[]"):
        name = ctr["Names"][0]
        if name.startswith(f"{RELEASE}-") and "-pod-0-" in name:
            out.append(f"==== {name}\n{podman.logs(name, tail=200)}")
    return "\n".join(out)
