"""Spawn -> first result on the one-machine Kubernetes cluster (tests/k8s_e2e): pip vs uv
in the server pod's install init container, cold vs cached, an empty environment and
numpy, side by side in one run.

    ZEXEC_E2E_IMAGES="$(bash scripts/k8s-e2e-images.sh)" \\
        .venv/bin/python bench/k8s_spawn_bench.py [--reps 2] [--package numpy]

What is timed, per sample: ``zexec.connect(ep, token)`` + ``.environment(requirements)`` +
the first remote call's result (``pow(2, 10)``, or the package's ``__version__``), in this
process. The pod path is the real one: the Deploy API (kubernetes orchestrator) creates
the Pod in kmock's API server, the test kubelet runs its init containers and server with
podman, the server registers with the broker, the call goes SDK -> broker -> pod.

Variants (each sample by a user not used before, so nothing of an earlier server is
reused; the previous user's server is terminated first, untimed):

* ``pip``: ``ZEXEC_K8S_INSTALLER=pip`` (``PIP_NO_CACHE_DIR=1``, as the deployed system):
  every spawn downloads and installs;
* ``uv cold``: ``ZEXEC_K8S_INSTALLER=uv`` with the shared cache volume emptied first;
* ``uv cached``: the same environment again, by another user: the cache holds it;
* the empty environment has no init container at all (the same for every installer);
* ``warm-pool hit``: a cluster with a warm pool of one (``ZEXEC_K8S_POOL_SIZE=1``) of
  that very environment (empty, or the package); each sample waits (untimed) until the
  pool's spare pod waits for adoption, then spawns: the spawn adopts it (a sample whose
  spawn did not adopt a pool pod is reported as a miss, not counted).

The API server is kmock with deleted objects forgotten (``PruningEmulator``): kmock keeps
and scans every object ever made, which made each sample slower than the one before.

Each cell: the median total, and in brackets the install container's part (created ->
exited, from the test kubelet's timeline).

Prints a markdown table; writes ``bench/results/k8s-spawn-<timestamp>.json`` with every sample. Not a
test: asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

import zexec  # noqa: E402
from tests.helpers.stack import wait_for  # noqa: E402
from tests.integration.kmock_support import PruningEmulator  # noqa: E402
from tests.k8s_e2e import podman  # noqa: E402
from tests.k8s_e2e.cluster import running_cluster  # noqa: E402

CACHE = Path("/var/tmp/zexec-k8s-e2e/bench-uv-cache")
POOL_NS = "zexec-pool"
USERS = [f"user{i}" for i in range(60)]


def cache_volume() -> str:
    return json.dumps({"hostPath": {"path": str(CACHE), "type": "DirectoryOrCreate"}})


def reset_cache() -> None:
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.mkdir(parents=True)
    shutil.chown(CACHE, 1000, 1000)  # the server pods' uid (runAsUser)


def one_spawn(cluster, user: str, requirements: list[str],
              package: str | None) -> dict[str, float]:
    """Seconds of one spawn -> first result (``total``), and of its install container
    (``install``: created -> exited, from the test kubelet's timeline); ``adopted``: 1.0
    when the spawn adopted a warm-pool pod; ``ready``: until ``environment()`` returned."""
    started = time.monotonic()  # the test kubelet's clock (its events), in this process
    conn = zexec.connect(cluster.ep_url, cluster.tokens[user])
    try:
        conn.environment(requirements, progress=False, timeout=900)
        ready = time.monotonic() - started
        if package:
            result = conn.client.call(_version_of, package)
        else:
            result = conn.client.call(pow, 2, 10)
        took = time.monotonic() - started
        assert result, result
        meta = cluster.pod_of(user)["metadata"]
        ns, name = meta["namespace"], meta["name"]
        events = next(r.events for (n, p), (r, _t) in list(cluster.kubelet.pods.items())
                      if (n, p) == (ns, name))
        conn.terminate()
    finally:
        conn.close()
    at = {what: t for t, what in events}
    install = (at["install exited 0"] - at["install created"]) if "install created" in at else 0.0
    if ns == POOL_NS:
        install = 0.0  # an adopted pod installed before the spawn, untimed
    # Removed, not only stopped: removing a container (vfs storage here) is heavy I/O
    # that would otherwise overlap the next sample.
    wait_for(lambda: not podman.containers(ns, name), timeout=180,
             what="the pod's containers to be removed")
    phases = {what: round(t - started, 3) for t, what in events
              if what in PHASES and t >= started}
    return {"total": took, "install": install, "adopted": float(ns == POOL_NS),
            "ready": ready, "phases": phases}


#: The test kubelet's events a breakdown shows, in the order a spawn reaches them.
PHASES = ("seen", "install created", "install exited 0", "server created",
          "server started", "server ready=True")


def breakdown(rows: list[dict]) -> str:
    """Median seconds from the spawn's start to each step the kubelet saw, then to
    ``environment()``'s return and the first result."""
    cells = []
    for what in PHASES:
        at = [r["phases"][what] for r in rows if what in r.get("phases", {})]
        if at:
            cells.append(f"{what} {statistics.median(at):.2f}")
    cells.append(f"environment() {statistics.median(r['ready'] for r in rows):.2f}")
    cells.append(f"result {statistics.median(r['total'] for r in rows):.2f}")
    return " -> ".join(cells)


def waiting_spare(cluster) -> None:
    """Until the pool's spare pod's server waits for adoption (untimed)."""
    from kubernetes import client

    from zexec.adapters.orchestrator_k8s import pool_rules as rules

    def spare() -> bool:
        pods = client.CoreV1Api(cluster.api).list_namespaced_pod(
            POOL_NS, _preload_content=False)
        return any(rules.is_spare(p) and rules.ANN_WAITING in
                   (p["metadata"].get("annotations") or {})
                   for p in json.loads(pods.data)["items"])
    wait_for(spare, timeout=900, interval=0.2, what="a waiting pool pod")


def run_pool(package: str, reps: int, users: list[str]) -> dict[str, list]:
    """Warm-pool hits: one cluster per environment, its pool of one of that environment."""
    out: dict[str, list] = {}
    take = iter(users)
    for key, reqs, pkg in (("empty", [], None), ("cold", [package], package)):
        settings = {"ZEXEC_K8S_POOL_SIZE": "1", "ZEXEC_K8S_INSTALLER": "uv",
                    "ZEXEC_K8S_POOL_REQUIREMENTS": ",".join(reqs)}
        with running_cluster(users=tuple(users), emulator=PruningEmulator,
                             **settings) as cluster:
            for rep in range(reps):
                print(f"[pool {key}] rep {rep + 1}/{reps}", file=sys.stderr, flush=True)
                waiting_spare(cluster)
                out.setdefault(key, []).append(one_spawn(cluster, next(take), reqs, pkg))
    return out


def _version_of(name: str) -> str:
    import importlib

    return importlib.import_module(name).__version__


def run_side(installer: str, package: str, reps: int, users: list[str]) -> dict[str, list]:
    settings = {"ZEXEC_K8S_INSTALLER": installer}
    if installer == "uv":
        settings["ZEXEC_K8S_INSTALL_CACHE_VOLUME"] = cache_volume()
    out: dict[str, list] = {}
    with running_cluster(users=tuple(users), emulator=PruningEmulator, **settings) as cluster:
        take = iter(users)
        for rep in range(reps):
            print(f"[{installer}] rep {rep + 1}/{reps}", file=sys.stderr, flush=True)
            out.setdefault("empty", []).append(one_spawn(cluster, next(take), [], None))
            if installer == "uv":
                reset_cache()
            out.setdefault("cold", []).append(
                one_spawn(cluster, next(take), [package], package))
            if installer == "uv":
                out.setdefault("cached", []).append(
                    one_spawn(cluster, next(take), [package], package))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--package", default="numpy")
    ap.add_argument("--only", choices=["all", "pool"], default="all",
                    help="pool: the warm-pool column only (the others say n/a)")
    args = ap.parse_args()
    samples: dict[str, dict[str, list]] = {"pip": {}, "uv": {}}
    if args.only == "all":
        samples["pip"] = run_side("pip", args.package, args.reps, USERS[:20])
        samples["uv"] = run_side("uv", args.package, args.reps, USERS[20:40])
    samples["pool"] = run_pool(args.package, args.reps, USERS[40:])

    def med(rows: list[dict[str, float]] | None, pool: bool = False) -> str:
        missed = [r for r in rows or [] if pool and r.get("adopted") == 0.0]
        rows = [r for r in rows or [] if r not in missed]
        if missed:
            print(f"warm pool: {len(missed)} sample(s) missed the pool", file=sys.stderr)
        if not rows:
            return "n/a"
        total = statistics.median(r["total"] for r in rows)
        install = statistics.median(r["install"] for r in rows)
        return f"{total:.1f} s" + (f" (install {install:.1f} s)" if install else "")

    print(f"\nspawn -> first result on the one-machine cluster (median of {args.reps}):\n")
    print("| environment | pip (no cache) | uv, cold cache | uv, cached | warm-pool hit |")
    print("| --- | --- | --- | --- | --- |")
    pip, uv, pool = samples["pip"], samples["uv"], samples["pool"]
    print(f"| empty | {med(pip.get('empty'))} | {med(uv.get('empty'))} | "
          f"{med(uv.get('empty'))} | {med(pool.get('empty'), pool=True)} |")
    print(f"| {args.package} | {med(pip.get('cold'))} | {med(uv.get('cold'))} | "
          f"{med(uv.get('cached'))} | {med(pool.get('cold'), pool=True)} |")
    print("\nwhere the time goes (median seconds since the spawn started; the test "
          "kubelet's events):\n")
    for side, rows in samples.items():
        for key, got in rows.items():
            got = [r for r in got if r.get("adopted") != 0.0 or side != "pool"]
            if got:
                print(f"- {side} {key}: {breakdown(got)}")
    results = BENCH / "results"
    results.mkdir(exist_ok=True)
    path = results / f"k8s-spawn-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"samples": samples, "reps": args.reps,
                                "package": args.package}, indent=2))
    print(f"\nsamples: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
