"""How the test kubelet turns a Pod's containers into ``podman create`` calls: volumes,
environment (``valueFrom`` included), securityContext and the image's own config.

A mixin of :class:`tests.k8s_e2e.kubelet.PodRunner` (it uses the runner's ``pod``,
``core``, ``workdir``, ``names``, ``stopping`` and ``cname``).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from tests.k8s_e2e import podman

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def raw(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return json.loads(call(*args, _preload_content=False, **kwargs).data)


class PodConfigError(Exception):
    """The pod cannot be started as written (CreateContainerConfigError, or ``reason``)."""

    def __init__(self, message: str, reason: str = "CreateContainerConfigError") -> None:
        super().__init__(message)
        self.reason = reason


class ContainerSpecs:
    pod: dict[str, Any]
    core: Any
    workdir: Path
    names: list[str]
    stopping: Any
    ns: str
    name: str
    cname: Any  # (container name) -> podman container name

    def _create(self, c: dict[str, Any], volumes: dict[str, Path]) -> str:
        """``podman create`` for container ``c``, from its image's root filesystem.

        Not ``podman create IMAGE``: on vfs storage that copies the whole image for every
        container (10-20 s here under load, where a node's overlayfs takes milliseconds).
        The image's own directory is the root instead, read-only (``--rootfs``, with
        podman's tmpfs on /run, /tmp and /var/tmp), as overlayfs's shared lower layer is
        on a node; what differs is that writes outside volumes fail (EROFS) instead of
        landing in a layer of the container's own. The image's config (env, user,
        workdir, entrypoint, cmd) is applied here, as a runtime does."""
        spec = self.pod["spec"]
        image = podman.image(c["image"])
        if image is None:
            raise PodConfigError(f'Container image "{c["image"]}" is not present with pull '
                                 'policy of Never', reason="ErrImageNeverPull")
        psc, csc = spec.get("securityContext") or {}, c.get("securityContext") or {}
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        gid = csc.get("runAsGroup", psc.get("runAsGroup"))
        user = f"{uid}:{gid if gid is not None else uid}" if uid is not None else image.user
        non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root and user.split(":")[0] in ("", "0", "root"):
            raise PodConfigError("container has runAsNonRoot and image will run as root")
        name = self.cname(c["name"])
        if self.stopping.is_set():
            raise PodConfigError("the pod is being deleted")
        self.names.append(name)
        args = ["create", "--name", name, "--network", "host", "--read-only",
                "--label", f"{podman.OWNER}=1", "--label", f"{podman.POD_NS}={self.ns}",
                "--label", f"{podman.POD_NAME}={self.name}",
                "--label", f"{podman.CONTAINER}={c['name']}",
                "--label", f"{podman.IMAGE}={c['image']}"]
        if user:
            args += ["--user", user]
        for g in [psc.get("fsGroup"), *(psc.get("supplementalGroups") or [])]:
            if g is not None:
                args += ["--group-add", str(g)]
        for cap in (csc.get("capabilities") or {}).get("drop") or []:
            args += ["--cap-drop", cap]
        for cap in (csc.get("capabilities") or {}).get("add") or []:
            args += ["--cap-add", cap]
        if csc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        workdir = c.get("workingDir") or image.workdir
        if workdir:
            args += ["--workdir", workdir]
        for m in c.get("volumeMounts") or []:
            host = volumes[m["name"]] / m.get("subPath", "")
            args += ["--volume", f"{host}:{m['mountPath']}" + (":ro" if m.get("readOnly") else "")]
        if spec.get("automountServiceAccountToken") is not False:
            args += ["--volume", f"{volumes['__token__']}:{TOKEN_DIR}:ro"]
        env = dict(os.environ)
        values = dict(kv.split("=", 1) for kv in image.env if "=" in kv)
        for e in c.get("env") or []:
            values[e["name"]] = self._env_value(e)
        for key, value in values.items():
            env[key] = value
            args += ["--env", key]
        # Kubernetes: command replaces the entrypoint, args the cmd; command alone drops
        # the image's cmd.
        if c.get("command"):
            argv = [*c["command"], *(c.get("args") or [])]
        else:
            argv = [*image.entrypoint, *(c.get("args") or image.cmd)]
        args += ["--rootfs", image.rootfs, *argv]
        proc = podman.run(*args, check=False, env=env)
        if proc.returncode != 0:
            raise PodConfigError(f"podman create: {proc.stderr.strip()}")
        return name

    def _env_value(self, e: dict[str, Any]) -> str:
        if "valueFrom" not in e:
            return str(e.get("value", ""))
        src = e["valueFrom"]
        if "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            data = self._read("secret", ref["name"]).get("data") or {}
            if ref["key"] not in data:
                raise PodConfigError(f"couldn't find key {ref['key']} in Secret "
                                     f"{self.ns}/{ref['name']}")
            return base64.b64decode(data[ref["key"]]).decode()
        if "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            data = self._read("config_map", ref["name"]).get("data") or {}
            if ref["key"] not in data:
                raise PodConfigError(f"couldn't find key {ref['key']} in ConfigMap "
                                     f"{self.ns}/{ref['name']}")
            return data[ref["key"]]
        if "fieldRef" in src:
            path = src["fieldRef"]["fieldPath"]
            return {"metadata.name": self.name, "metadata.namespace": self.ns,
                    "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1",
                    "spec.nodeName": "test-kubelet"}[path]
        raise PodConfigError(f"unsupported valueFrom: {src}")

    def _read(self, kind: str, name: str) -> dict[str, Any]:
        try:
            return raw(getattr(self.core, f"read_namespaced_{kind}"), name, self.ns)
        except ApiException as exc:
            raise PodConfigError(f"{kind} {self.ns}/{name} not found ({exc.status})") from None

    def _volumes(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        root = self.workdir / "volumes"
        for v in self.pod["spec"].get("volumes") or []:
            path = root / v["name"]
            path.mkdir(parents=True)
            if "emptyDir" in v:
                path.chmod(0o777)
            elif "configMap" in v or "secret" in v:
                kind = "config_map" if "configMap" in v else "secret"
                ref = v.get("configMap") or v.get("secret") or {}
                obj = self._read(kind, ref.get("name") or ref.get("secretName"))
                data = obj.get("data") or {}
                mode = ref.get("defaultMode", 0o644)
                items = ref.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    value = data[item["key"]]
                    blob = base64.b64decode(value) if kind == "secret" else value.encode()
                    (path / item["path"]).write_bytes(blob)
                    (path / item["path"]).chmod(mode)
                path.chmod(0o755)
            elif "hostPath" in v:  # stands for a shared (NFS, CSI) volume in the tests
                path.rmdir()
                path = Path(v["hostPath"]["path"])
                if v["hostPath"].get("type") == "DirectoryOrCreate":
                    path.mkdir(parents=True, exist_ok=True)
            else:
                raise PodConfigError(f"volume {v['name']}: only configMap, secret, "
                                     "emptyDir and hostPath are supported by the test kubelet")
            out[v["name"]] = path
        token = root / "__token__"
        token.mkdir(parents=True)
        (token / "token").write_text("test-kubelet-token")
        (token / "namespace").write_text(self.ns)
        token.chmod(0o755)
        out["__token__"] = token
        return out
