"""The warm pool's decisions, as pure functions over the pods the API returns.

A pool pod goes through these states, all recorded on the pod itself (labels and
annotations), so every Deploy API replica sees the same pool and none keeps any of it:

``started``   created by the top-up loop; its server is building/loading the environment;
``waiting``   its server asked the Deploy API for a binding (``ANN_WAITING``): the
              environment is ready and the pod is adoptable;
``claimed``   a spawn took it for one user (``ANN_CLAIMED``, written with the pod's
              ``resourceVersion`` as precondition: of two concurrent claims exactly one
              succeeds); its labels now carry that user's;
``bound``     the pod's server received that user's id and credential (``ANN_BOUND``,
              again under a precondition): it never gets another binding;
``registered`` its server registered with the broker as that user and said so
              (``ANN_REGISTERED``): the user's status is ``ready`` at once, not at the
              readiness probe's next period (up to a second later).

See :mod:`.pool` for the API calls and ``docs/deploy-kubernetes.md`` ("Warm pool").
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from zexec.adapters.orchestrator_k8s.podstatus import PodPhase, pod_phase

#: Label every pool pod (and its key Secret) carries, adopted or not.
LABEL_POOL = "zexec.io/pool"
ANN_WAITING = "zexec.io/pool-waiting"
ANN_CLAIMED = "zexec.io/pool-claimed-by"
ANN_BOUND = "zexec.io/pool-bound"
ANN_REGISTERED = "zexec.io/pool-registered"
#: The user namespace an adopted pod serves (for the pool's garbage collection).
ANN_OWNER_NS = "zexec.io/pool-owner-namespace"


def pool_key(secret: bytes, pod_name: str) -> str:
    """The key pool pod ``pod_name`` proves itself with when it asks for its binding:
    HMAC-SHA256 under the broker secret, in another domain than the servers' broker
    credentials (``zexec-server:``), so neither can stand for the other."""
    return hmac.new(secret, b"zexec-pool:" + pod_name.encode(), hashlib.sha256).hexdigest()


def check_pool_key(secret: bytes, pod_name: str, key: str) -> bool:
    return hmac.compare_digest(pool_key(secret, pod_name).encode(), key.encode())


def locate(ref: str, namespace: str) -> tuple[str, str]:
    """(namespace, pod name) of a user namespace's pod annotation: ``name`` for a pod
    created in the user's own ``namespace``, ``<pool namespace>/<name>`` for an adopted
    one (pod names cannot contain ``/``)."""
    where, sep, name = ref.rpartition("/")
    return (where, name) if sep else (namespace, ref)


def _meta(pod: dict[str, Any]) -> dict[str, Any]:
    return pod.get("metadata") or {}


def _ann(pod: dict[str, Any]) -> dict[str, str]:
    return _meta(pod).get("annotations") or {}


def _ended(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Unknown")


def is_spare(pod: dict[str, Any]) -> bool:
    """Not claimed, not being deleted, not ended: it is, or will become, adoptable."""
    return not _ann(pod).get(ANN_CLAIMED) and not _meta(pod).get("deletionTimestamp") \
        and not _ended(pod)


def adoptable(pods: list[dict[str, Any]], digest: str) -> list[dict[str, Any]]:
    """The pods a spawn of environment ``digest`` may claim, longest waiting first (the
    order every replica tries them in; a lost race moves on to the next one)."""
    found = [
        p for p in pods
        if is_spare(p) and _ann(p).get(ANN_WAITING)
        and (p.get("status") or {}).get("phase") == "Running"
        and _ann(p).get("zexec.io/env-digest") == digest
    ]
    return sorted(found, key=lambda p: (_waited_since(p), _meta(p).get("name", "")))


def _waited_since(pod: dict[str, Any]) -> float:
    try:
        return float(_ann(pod).get(ANN_WAITING, "0"))
    except ValueError:
        return 0.0


def binding(pod: dict[str, Any] | None) -> tuple[str, str]:
    """What the Deploy API answers pool pod ``pod``'s request for its binding:
    ``("refuse", why)``, ``("wait", "")`` (no user yet; ``"announce"`` when it is not
    yet marked waiting) or ``("bind", user id)``."""
    if pod is None:
        return "refuse", "no such pool pod"
    if _meta(pod).get("deletionTimestamp") or _ended(pod):
        return "refuse", "this pool pod is being removed"
    ann = _ann(pod)
    if ann.get(ANN_BOUND):
        return "refuse", "this pool pod has had its binding already"
    user = ann.get(ANN_CLAIMED, "")
    if user:
        return "bind", user
    return ("wait", "") if ann.get(ANN_WAITING) else ("announce", "")


def server_phase(pod: dict[str, Any]) -> PodPhase:
    """:func:`.podstatus.pod_phase`, except that an adopted pod whose server said it
    registered is ``ready`` while the readiness probe has yet to see it."""
    got = pod_phase(pod)
    stamp = _ann(pod).get(ANN_REGISTERED)
    if got.phase == "starting" and stamp and _ann(pod).get(ANN_BOUND):
        try:
            return PodPhase("ready", "", float(stamp))
        except ValueError:
            return got
    return got


def top_up(pods: list[dict[str, Any]], size: int, digest: str) -> tuple[int, list[str]]:
    """(how many pool pods to create, names of pods to delete) so that ``size`` spare
    pods of environment ``digest`` exist: unclaimed pods that ended or run another
    environment (the site changed it) go; spares beyond ``size`` go too, those not yet
    waiting and then the newest first (replicas topping up at once may overshoot; this
    converges, keeping the pods that are ready soonest)."""
    drop = [_meta(p)["name"] for p in pods
            if not _ann(p).get(ANN_CLAIMED) and not _meta(p).get("deletionTimestamp")
            and (_ended(p) or _ann(p).get("zexec.io/env-digest") != digest)]
    spares = [p for p in pods if is_spare(p) and _meta(p)["name"] not in drop]
    spares.sort(key=lambda p: (not _ann(p).get(ANN_WAITING), _created(p), _meta(p)["name"]))
    drop += [_meta(p)["name"] for p in spares[size:]]
    return max(0, size - len(spares)), drop


def _created(pod: dict[str, Any]) -> float:
    try:
        return float(_ann(pod).get("zexec.io/created-at", "0"))
    except ValueError:
        return 0.0


def orphaned(pod: dict[str, Any], namespace: dict[str, Any] | None, pool_ns: str,
             now: float, grace: float = 60.0) -> bool:
    """An adopted pod whose user namespace no longer names it (gone, terminated, or the
    server was replaced): it serves nobody and is deleted. Not within ``grace`` seconds
    of its claim: the claiming spawn names it in the namespace right after the claim."""
    if not _ann(pod).get(ANN_CLAIMED) or now - _created(pod) <= grace:
        return False
    if namespace is None or _meta(namespace).get("deletionTimestamp"):
        return True
    ref = f"{pool_ns}/{_meta(pod).get('name', '')}"
    ann = _meta(namespace).get("annotations") or {}
    return ref not in (ann.get("zexec.io/pod"), ann.get("zexec.io/next-pod"))
