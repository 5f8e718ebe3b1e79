"""Run kmock's Kubernetes emulator for the synchronous official client.

kmock 0.8 gaps this module fills, as documented emulator workarounds:
* ``/api/v1/namespaces[/<name>]`` is parsed as "namespaced resource" and fails; we parse
  the Namespace resource itself correctly;
* no namespace controller: deleting a Namespace removes the objects inside it here, as
  the real namespace controller eventually does.
"""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp.web
import kmock
import pluggy
from kmock._internal import parsing
from kubernetes import client

from zexec.plugins import PROJECT, ZexecSpec
from zexec.settings import KubernetesSettings

K8S_SETTINGS = KubernetesSettings(
    namespace_prefix="zexec-u-",
    broker_backend_url="tcp://zexec-broker.zexec.svc:5560",
    extra_egress_cidrs="10.96.0.0/12",
)


def bare_plugin_manager(*plugins: object) -> pluggy.PluginManager:
    """A plugin manager with zexec's hookspecs and only ``plugins`` (no entry points)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(ZexecSpec)
    for p in plugins:
        pm.register(p)
    return pm


_original_parse_path = parsing.parse_path
#: Emulators running now: kmock's path parser is patched while any runs (a module's own
#: emulator ending must not unpatch it under the session's, which goes on serving).
_running = [0]


def _parse_path(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    # /api/v1/namespaces, /api/v1/namespaces/<name>, .../<name>/{status,finalize}
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
    ):
        name = parts[3] if len(parts) > 3 else None
        sub = parts[4] if len(parts) > 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, sub)
    return _original_parse_path(path)


class CascadingEmulator(kmock.KubernetesEmulator):
    """The emulator plus the namespace controller's cascade on delete, and a stand-in
    for watches: ``on_write`` callables run after every request that is not a read (the
    test controllers wake at once, as a real controller's watch fires, instead of at
    their next poll)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_write: list[Callable[[], None]] = []

    async def _handle(self, request):
        response = await super()._handle(request)
        if request.method != kmock.method.GET:
            for wake in self.on_write:
                wake()
        res = request.resource
        if (
            request.method == kmock.method.DELETE
            and res is not None
            and res.plural == "namespaces"
            and request.name
        ):
            async with self._lock:
                for key, obj in list(self._objects.items()):
                    if key[1] == request.name and not obj.deleted:
                        obj.delete()
        return response


class PruningEmulator(CascadingEmulator):
    """Plus a memory of one request and no deleted objects: kmock 0.8 keeps every request
    and every object ever made, and scans the requests (``request in payload._source``,
    an identity search, for each reaction such as the test kubelet's pod logs) and the
    objects on every request, so a long run slows down (listing an empty collection went
    7 -> 40 ms over four users' spawns, with the controllers polling). For benchmarks;
    tests that look at past requests or deleted objects use the others."""

    async def _handle(self, request):
        del self._requests[:-1]  # this request was appended last (kmock's __call__)
        response = await super()._handle(request)
        if request.method == kmock.method.DELETE:
            async with self._lock:
                for key, obj in list(self._objects.items()):
                    if obj.deleted:
                        del self._objects[key]
        return response


class VersionedEmulator(CascadingEmulator):
    """Plus ``metadata.resourceVersion`` as the API server keeps it: a new value at every
    create and update, and an update (patch) naming another version than the stored
    one is refused with 409 Conflict (the optimistic concurrency the warm pool's claims
    rely on; kmock 0.8 has none)."""

    _version = 0

    async def _handle(self, request):
        res = request.resource
        if res is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE) \
                and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.action == kmock.action.UPDATE and request.name is not None:
                key = (res, request.namespace, request.name)
                stored = self._objects[key] if key in self._objects else None
                wanted = meta.get("resourceVersion")
                have = (stored.raw.get("metadata") or {}).get("resourceVersion") \
                    if stored is not None and not stored.deleted else None
                if wanted is not None and wanted != have:
                    return aiohttp.web.json_response(
                        {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "Conflict", "code": 409,
                         "message": "the object has been modified"}, status=409)
            VersionedEmulator._version += 1
            meta["resourceVersion"] = str(VersionedEmulator._version)
        return await super()._handle(request)


@contextmanager
def running_emulator(emulator: type[CascadingEmulator] = CascadingEmulator,
                     ) -> Iterator[tuple[CascadingEmulator, client.ApiClient]]:
    """Yield (emulator, ApiClient pointed at it); the server runs on its own loop thread."""
    parsing.parse_path = _parse_path
    ready = threading.Event()
    box: dict = {}

    async def main() -> None:
        emu = emulator()
        with warnings.catch_warnings():  # kmock 0.8 uses a deprecated importlib call
            warnings.simplefilter("ignore", DeprecationWarning)
            emu.resources.load_bundled()
        async with emu, kmock.Server(emu) as srv:
            box.update(emu=emu, url=str(srv.url).rstrip("/"), loop=asyncio.get_running_loop())
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:  # surface startup failures to the waiting test
            box["error"] = e
            ready.set()

    thread = threading.Thread(target=run, name="kmock", daemon=True)
    thread.start()
    ready.wait()
    if "error" in box:
        raise box["error"]
    cfg = client.Configuration()
    cfg.host = box["url"]
    api = client.ApiClient(cfg)
    _running[0] += 1
    try:
        yield box["emu"], api
    finally:
        api.close()
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(timeout=10)
        _running[0] -= 1
        if not _running[0]:
            parsing.parse_path = _original_parse_path


def server_pod(api: client.ApiClient, ns: str, which: str = "zexec.io/pod") -> str:
    """The current pod of the user's server Job (named by the namespace's annotation
    ``which``), made first by a pass of the test Job controller, as the cluster's would."""
    from tests.helpers.k8s_jobs import TestJobController
    from zexec.adapters.orchestrator_k8s import jobs

    TestJobController(api).sync()
    core = client.CoreV1Api(api)
    job = core.read_namespace(ns).metadata.annotations[which]
    items = json.loads(core.list_namespaced_pod(ns, _preload_content=False).data)["items"]
    pod = jobs.current_pod(jobs.pods_of(job, items))
    assert pod is not None, f"job {ns}/{job} has no pod"
    return pod["metadata"]["name"]
