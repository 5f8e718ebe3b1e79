"""A small kubelet for tests: runs the Pods of an API server (kmock) as podman containers.

It does what a kubelet does for the pods the Deploy API makes, as far as one machine
with podman allows:

* init containers one after the other, then the containers; ``restartPolicy: Never``
  (every container is *created* ahead, in the background: see :meth:`PodRunner.run`);
* ConfigMap, Secret and emptyDir volumes (host directories under ``workdir``; emptyDirs
  are mode 0777 as on a node), hostPath (a shared volume), ``readOnly`` mounts, ``subPath``;
* ``env`` with ``value`` and ``valueFrom`` (secretKeyRef, configMapKeyRef, fieldRef);
  values reach podman through its environment, never its command line;
* containers run from their image's root filesystem, read-only (see
  :meth:`PodRunner._create`: the one difference from a node, made for speed);
* securityContext: runAsUser/runAsGroup (container over pod), fsGroup and
  supplementalGroups as extra groups, runAsNonRoot checked (CreateContainerConfigError),
  ``capabilities.drop``, ``allowPrivilegeEscalation: false`` (no-new-privileges),
  ``readOnlyRootFilesystem``; a service-account token is mounted unless
  ``automountServiceAccountToken: false``;
* the exec readiness probe, run with ``podman exec`` every ``periodSeconds``;
* status written back (phase, conditions, init/container states with exit codes,
  reasons, ``FallbackToLogsOnError`` messages) through the status subresource;
* a deleted pod (or namespace) stops and removes its containers;
* a lost node (:meth:`TestKubelet.lose_node`): the pod's containers are killed, this
  kubelet stops reporting on it, and the status the node controller would write is
  written instead (phase ``Unknown`` and/or a ``DisruptionTarget`` condition);
* the pod log API (``read_namespaced_pod_log``) answered from ``podman logs``.

Every pod runs in the host's network namespace (as ``hostNetwork: true``), so all the
traffic of the tests stays on loopback; resource limits are not applied (the sandbox's
cgroups do not allow it).
"""

from __future__ import annotations

import copy
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kmock
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.k8s_e2e import podman
from tests.k8s_e2e.podspec import ContainerSpecs, PodConfigError, raw

#: FallbackToLogsOnError: the last 80 lines or 2048 bytes of the log, like the kubelet.
MSG_LINES, MSG_BYTES = 80, 2048


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StartFailed(Exception):
    """The runtime could not start a container (RunContainerError, already recorded)."""


@dataclass
class PodRunner(ContainerSpecs):
    """One pod: its containers, volumes and status."""

    core: client.CoreV1Api
    pod: dict[str, Any]
    workdir: Path
    stopping: threading.Event = field(default_factory=threading.Event)
    status: dict[str, Any] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    created: list[Future] = field(default_factory=list)
    #: (time.monotonic(), what) of the pod's steps, for benchmarks and failures.
    events: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append((time.monotonic(), what))

    @property
    def ns(self) -> str:
        return self.pod["metadata"]["namespace"]

    @property
    def name(self) -> str:
        return self.pod["metadata"]["name"]

    def cname(self, container: str) -> str:
        return f"k8s_{container}_{self.name}_{self.ns}"

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        self.note("seen")
        spec = self.pod["spec"]
        inits, mains = spec.get("initContainers") or [], spec.get("containers") or []
        self.status = {
            "phase": "Pending",
            "conditions": [self._cond("PodScheduled", True),
                           self._cond("Initialized", not inits),
                           self._cond("ContainersReady", False), self._cond("Ready", False)],
            "initContainerStatuses": [self._waiting(c, "PodInitializing") for c in inits],
            "containerStatuses": [self._waiting(c, "PodInitializing" if inits else
                                                "ContainerCreating") for c in mains],
            "startTime": now(),
            "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
        }
        if not inits:
            del self.status["initContainerStatuses"]
        self.push()
        # podman create on vfs storage copies the whole image (seconds); a node's create
        # is cheap. So every container is created in the background, in the pod's order,
        # as soon as the pod is seen, and started in that order when its turn comes.
        creator = ThreadPoolExecutor(1, thread_name_prefix=f"create-{self.name}")
        try:
            volumes = self._volumes()
            self.created = [creator.submit(self._create, c, volumes) for c in inits + mains]
            for i, c in enumerate(inits):
                code = self._run_init(c, volumes, i)
                if self.stopping.is_set():
                    return
                if code != 0:
                    self.status["phase"] = "Failed"
                    self.push()
                    return
            self._set_cond("Initialized", True)
            for i, c in enumerate(mains):
                self._start(c, volumes, i)
            self.status["phase"] = "Running"
            self.push()
            self._watch(mains)
        except StartFailed:
            self.push()
        except PodConfigError as exc:
            key = "initContainerStatuses" if self._in_init else "containerStatuses"
            self.status[key][self._index]["state"] = {"waiting": {
                "reason": exc.reason, "message": str(exc)}}
            self.push()
        except Exception as exc:  # report, as a kubelet does, rather than die silently
            if not self.stopping.is_set():
                self.status.update(phase="Failed", reason="TestKubeletError", message=repr(exc))
                self.push()
        finally:
            creator.shutdown(wait=False, cancel_futures=True)

    def stop(self, thread: threading.Thread | None = None) -> None:
        """The pod was deleted: stop its containers (SIGTERM, then SIGKILL after the
        grace period) and remove them and its volumes."""
        self.stopping.set()
        grace = str(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        for _ in range(2):  # again after run() ended: it may have created one meanwhile
            for name in reversed(self.names):
                podman.run("rm", "--force", "--time", grace, name, check=False, timeout=120)
            if thread is None:
                break
            thread.join(60)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def lose(self, unknown: bool = True, disruption: bool = True) -> dict[str, Any]:
        """The node went away with the pod on it: its containers die with it, its
        kubelet says nothing more, and the control plane marks the pod as a node
        controller does (``unknown``: phase Unknown, as older controllers wrote;
        ``disruption``: the taint manager's DisruptionTarget condition). Returns the
        status written."""
        self.stopping.set()  # _watch() ends and push() is silent: nobody reports anymore
        for name in self.names:
            podman.run("kill", name, check=False)
        status = copy.deepcopy(self.status)
        message = f"Node 127.0.0.1 which was running pod {self.name} is unresponsive"
        for cond in status.get("conditions") or []:
            if cond["type"] in ("Ready", "ContainersReady"):
                cond.update(status="False", reason="NodeLost", message=message,
                            lastTransitionTime=now())
        if unknown:
            status.update(phase="Unknown", reason="NodeLost", message=message)
        if disruption:
            status.setdefault("conditions", []).append({
                "type": "DisruptionTarget", "status": "True", "lastTransitionTime": now(),
                "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint"})
        self.core.patch_namespaced_pod_status(self.name, self.ns, {"status": status},
                                              _preload_content=False)
        return status

    # ------------------------------------------------------------------ containers

    _in_init = False
    _index = 0

    def _run_init(self, c: dict[str, Any], volumes: dict[str, Path], i: int) -> int:
        self._in_init, self._index = True, i
        st = self.status["initContainerStatuses"][i]
        name = self.created[i].result()
        self.note(f"{c['name']} created")
        started = now()
        st["state"] = {"running": {"startedAt": started}}
        self.push()
        proc = podman.run("start", "--attach", name, check=False, timeout=3600)
        code = self._exit_code(name, proc.returncode)
        self.note(f"{c['name']} exited {code}")
        if proc.returncode >= 125 and code == 0:  # podman or the runtime failed to start it
            code = 128
            message = proc.stderr.strip()[-MSG_BYTES:]
            st["state"] = {"waiting": {"reason": "RunContainerError", "message": message}}
            self.status["message"] = f"container {c['name']}: RunContainerError: {message}"
            self.push()
            return code
        st["state"] = {"terminated": self._terminated(c, name, code, started)}
        st["ready"] = code == 0
        self.push()
        return code

    def _start(self, c: dict[str, Any], volumes: dict[str, Path], i: int) -> None:
        self._in_init, self._index = False, i
        name = self.created[len(self.pod["spec"].get("initContainers") or []) + i].result()
        st = self.status["containerStatuses"][i]
        self.note(f"{c['name']} created")
        proc = podman.run("start", name, check=False)
        self.note(f"{c['name']} started")
        if proc.returncode != 0:
            st["state"] = {"waiting": {"reason": "RunContainerError",
                                       "message": proc.stderr.strip()[-MSG_BYTES:]}}
            raise StartFailed(proc.stderr.strip())
        st.update(state={"running": {"startedAt": now()}}, started=True)

    def _watch(self, mains: list[dict[str, Any]]) -> None:
        """Probe readiness and wait for the containers to end."""
        period = min(float((c.get("readinessProbe") or {}).get("periodSeconds", 10))
                     for c in mains)
        while not self.stopping.is_set():
            running = 0
            for i, c in enumerate(mains):
                st = self.status["containerStatuses"][i]
                if "running" not in st["state"]:
                    continue
                info = podman.inspect(self.cname(c["name"]))
                state = (info or {}).get("State") or {}
                if info is None or state.get("Status") in ("exited", "stopped"):
                    code = int(state.get("ExitCode", 137)) if info else 137
                    started = st["state"]["running"]["startedAt"]
                    st["state"] = {"terminated": self._terminated(
                        c, self.cname(c["name"]), code, started,
                        oom=bool(state.get("OOMKilled")))}
                    st["ready"] = False
                    self.push()
                    continue
                running += 1
                ready = self._probe(c)
                if not ready and not self._running(self.cname(c["name"])):
                    continue  # exited meanwhile: recorded as such on the next round
                if ready != st.get("ready"):
                    self.note(f"{c['name']} ready={ready}")
                    st["ready"] = ready
                    self.push()
            if running == 0:
                codes = [s["state"]["terminated"]["exitCode"]
                         for s in self.status["containerStatuses"]]
                self.status["phase"] = "Succeeded" if not any(codes) else "Failed"
                self.push()
                return
            self.stopping.wait(period)

    def _probe(self, c: dict[str, Any]) -> bool:
        probe = c.get("readinessProbe")
        if not probe:
            return True
        command = (probe.get("exec") or {}).get("command")
        if not command:
            return True  # only exec probes are run here
        proc = podman.run("exec", self.cname(c["name"]), *command, check=False,
                          timeout=float(probe.get("timeoutSeconds", 1)) + 30)
        return proc.returncode == 0

    @staticmethod
    def _running(name: str) -> bool:
        return ((podman.inspect(name) or {}).get("State") or {}).get("Status") == "running"

    def _exit_code(self, name: str, fallback: int) -> int:
        info = podman.inspect(name)
        return int(((info or {}).get("State") or {}).get("ExitCode", fallback))

    def _terminated(self, c: dict[str, Any], name: str, code: int, started: str,
                    oom: bool = False) -> dict[str, Any]:
        out = {"exitCode": code, "startedAt": started, "finishedAt": now(),
               "reason": "OOMKilled" if oom else ("Completed" if code == 0 else "Error"),
               "containerID": f"podman://{name}"}
        if code != 0 and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            text = podman.logs(name, tail=MSG_LINES)
            out["message"] = text.encode()[-MSG_BYTES:].decode(errors="replace")
        return out

    # ------------------------------------------------------------------ status

    @staticmethod
    def _cond(kind: str, ok: bool) -> dict[str, Any]:
        return {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now()}

    @staticmethod
    def _waiting(c: dict[str, Any], reason: str) -> dict[str, Any]:
        return {"name": c["name"], "image": c["image"], "ready": False, "restartCount": 0,
                "started": False, "state": {"waiting": {"reason": reason}}}

    def _set_cond(self, kind: str, ok: bool) -> None:
        for cond in self.status["conditions"]:
            if cond["type"] == kind and cond["status"] != ("True" if ok else "False"):
                cond.update(self._cond(kind, ok))

    def push(self) -> None:
        """Write the status (conditions follow the containers' readiness)."""
        if self.stopping.is_set():
            return
        mains = self.status.get("containerStatuses") or []
        ready = bool(mains) and all(s.get("ready") for s in mains)
        ready = ready and self.status["phase"] == "Running"
        self._set_cond("ContainersReady", ready)
        self._set_cond("Ready", ready)
        try:
            self.core.patch_namespaced_pod_status(self.name, self.ns, {"status": self.status},
                                                  _preload_content=False)
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: stop() follows
                raise


class TestKubelet:
    """Watches the API server's Pods (by polling, and at once after :meth:`wake`, the
    emulator's stand-in for a watch: kmock ignores selectors and has no resourceVersions
    to resume a watch from) and runs each one as a :class:`PodRunner`."""

    __test__ = False  # not a pytest class

    def __init__(self, api: client.ApiClient, workdir: Path, poll: float = 0.2) -> None:
        self.core = client.CoreV1Api(api)
        self.workdir = workdir
        self.poll = poll
        self.pods: dict[tuple[str, str], tuple[PodRunner, threading.Thread]] = {}
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="test-kubelet", daemon=True)
        self.errors: list[str] = []

    def start(self) -> TestKubelet:
        self._thread.start()
        return self

    def serve_logs(self, emulator: kmock.KubernetesEmulator) -> None:
        """Answer ``GET .../pods/<name>/log`` from podman (kmock would return the pod)."""
        emulator[kmock.subresource("log")] << self._log

    @staticmethod
    def _log(request: Any) -> bytes:
        container = request.params.get("container") or "server"
        tail = request.params.get("tailLines")
        name = f"k8s_{container}_{request.name}_{request.namespace}"
        return podman.logs(name, tail=int(tail) if tail else None).encode()

    def lose_node(self, ns: str, name: str, **how: bool) -> dict[str, Any]:
        """The node running pod ``ns/name`` is lost (see :meth:`PodRunner.lose`)."""
        runner, _ = self.pods[(ns, name)]
        return runner.lose(**how)

    def evict(self, ns: str, name: str) -> None:
        """What the taint manager does to a lost node's pod once its tolerations'
        ``tolerationSeconds`` have passed: the ``DisruptionTarget`` condition (if not
        there yet), then delete it."""
        pod = raw(self.core.read_namespaced_pod, name, ns)
        conditions = (pod.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "DisruptionTarget" for c in conditions):
            conditions.append({
                "type": "DisruptionTarget", "status": "True", "lastTransitionTime": now(),
                "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint"})
            self.core.patch_namespaced_pod_status(name, ns, {"status": {
                "conditions": conditions}}, _preload_content=False)
        self.core.delete_namespaced_pod(name, ns, _preload_content=False)

    def wake(self) -> None:
        """Sync now (something changed in the API server), not at the next poll."""
        self._woken.set()

    def close(self) -> None:
        self._stop.set()
        self._woken.set()
        self._thread.join(30)
        for runner, thread in list(self.pods.values()):
            runner.stop(thread)
        self.pods.clear()
        podman.unmount_images()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._woken.clear()  # before the sync: a change during it syncs again
            try:
                self.sync()
            except Exception as exc:  # keep going: the tests see errors via self.errors
                self.errors.append(repr(exc))
            self._woken.wait(self.poll)

    def sync(self) -> None:
        items = raw(self.core.list_pod_for_all_namespaces).get("items") or []
        seen = set()
        for pod in items:
            meta = pod["metadata"]
            key = (meta.get("namespace") or "", meta["name"])
            seen.add(key)
            if meta.get("deletionTimestamp") and key in self.pods:
                self._remove(key)
            elif key not in self.pods and not meta.get("deletionTimestamp") and \
                    not (pod.get("status") or {}).get("phase"):
                runner = PodRunner(self.core, pod, self.workdir / f"{key[0]}_{key[1]}")
                thread = threading.Thread(target=runner.run, name=f"pod-{key[1]}",
                                          daemon=True)
                self.pods[key] = (runner, thread)
                thread.start()
        for key in set(self.pods) - seen:
            self._remove(key)

    def _remove(self, key: tuple[str, str]) -> None:
        runner, thread = self.pods.pop(key)
        threading.Thread(target=runner.stop, args=(thread,), name=f"stop-{key[1]}",
                         daemon=True).start()

