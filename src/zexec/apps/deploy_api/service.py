"""What the Deploy API does, apart from HTTP: spawn semantics, waiting, status views.

Collaborators arrive as arguments (an :class:`~zexec.core.ports.Orchestrator`, a parse
function); nothing here reads a container, and only :func:`resource_limits` settings. Functions that call the
orchestrator block (the HTTP layer runs them in a worker thread).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool

from zexec.core import replacing
from zexec.core.errors import EnvironmentConflict, InvalidEnvironment
from zexec.core.model import EnvSpec, ServerStatus, UserIdentity
from zexec.core.ports import Orchestrator
from zexec.core.resources import ResourceLimits, describe_resources, resources_dict
from zexec.settings import DeploySettings

#: Phases a waiting spawn stops at.
SETTLED = frozenset({"ready", "failed", "terminated"})
#: Rough share of the way to ``ready`` for each phase (for progress displays).
PROGRESS = {"pending": 0.0, "installing": 0.25, "starting": 0.75, "ready": 1.0}

FORCE_HINT = (
    "To replace it (interrupting its work): with ndp-ep call terminate_rexec_environment() "
    "first; with scidx-rexec pass force_reinstall=True to remote_func.set_environment; "
    'in a JSON body send "force": true.'
)

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


@dataclass(frozen=True)
class SpawnResult:
    """``outcome``: ``created`` (no live server before), ``unchanged`` (same environment
    already running: idempotent) or ``replaced`` (force)."""

    status: ServerStatus
    outcome: str


def parse_flag(value: Any, name: str) -> bool:
    """A boolean form/JSON field: True/False in any case, 1/0, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidEnvironment(f"{name} must be True or False, not {value!r}")


def spawn(
    orchestrator: Orchestrator, user: UserIdentity, spec: EnvSpec, force: bool
) -> SpawnResult:
    """Ensure ``user`` has a server running ``spec``.

    Same digest as the live server: idempotent. Another digest: EnvironmentConflict
    (with advice on forcing) unless ``force``, which replaces the server.
    """
    before = orchestrator.status(user.user_id)
    try:
        status = orchestrator.ensure(user, spec, force=force)
    except EnvironmentConflict as exc:
        msg = str(exc)
        if "force_reinstall" not in msg:
            msg = f"{msg.rstrip(' .')}. {FORCE_HINT}"
        raise EnvironmentConflict(msg) from exc
    return SpawnResult(status, replacing.spawn_outcome(before, force))


async def wait_settled(
    orchestrator: Orchestrator, user_id: str, timeout: float, poll: float = 0.2
) -> ServerStatus | None:
    """Poll the user's server until ready/failed/terminated or ``timeout`` seconds."""
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        st = await run_in_threadpool(orchestrator.status, user_id)
        if st is None or st.phase in SETTLED or time.monotonic() >= deadline:
            return st
        await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))


def resource_limits(settings: DeploySettings) -> ResourceLimits:
    """The site's limits (``ZEXEC_DEPLOY_MAX_*``) and the default worker count of the
    orchestrator the settings select (a request equal to it is the same server)."""
    default_workers: int | None = None
    if settings.orchestrator == "local":
        default_workers = settings.server_workers
    elif settings.orchestrator == "kubernetes":
        from zexec.settings import KubernetesSettings

        default_workers = KubernetesSettings().server_workers
    return ResourceLimits(settings.max_cpus, settings.max_memory, settings.max_gpus,
                          settings.max_workers, default_workers)


def env_view(env: EnvSpec | None) -> dict[str, Any] | None:
    """An environment as JSON; ``resources`` (what was asked for) only when some were:
    the view of an environment without any is what it always was."""
    if env is None:
        return None
    view = {"python": env.python, "requirements": list(env.requirements), "digest": env.digest}
    if not env.resources.default:
        view["resources"] = resources_dict(env.resources)
    return view


def granted_view(st: ServerStatus) -> dict[str, Any] | None:
    """What the server got (every field; None = no bound), with the orchestrator's note
    on what it does not enforce; None when the orchestrator does not say."""
    if st.resources is None:
        return None
    r = st.resources
    return {"cpus": r.cpus, "memory": r.memory, "gpus": r.gpus, "workers": r.workers,
            "note": st.resources_note}


def status_view(st: ServerStatus, user: UserIdentity) -> dict[str, Any]:
    """The JSON view of a server's status, as ``GET /status`` and spawn return it.
    ``previous``: while a replacement is built (or after it failed), the server that
    keeps serving meanwhile (``phase``, ``env``, ``since``); else None."""
    prev = st.previous
    return {
        "status": st.phase,
        "phase": st.phase,
        "ready": st.phase == "ready",
        "progress": PROGRESS.get(st.phase),
        "reason": st.reason,
        "log_tail": list(st.log_tail),
        "since": st.since,
        "since_iso": datetime.fromtimestamp(st.since, UTC).isoformat() if st.since else None,
        "user": user.username or user.user_id,
        "user_id": user.user_id,
        "env": env_view(st.env),
        "resources": granted_view(st),
        "previous": None if prev is None else {
            "phase": prev.phase, "env": env_view(prev.env), "since": prev.since},
    }


def spawn_message(result: SpawnResult, user: UserIdentity, prefix: str) -> str:
    """One sentence saying what happened and what to do next."""
    st, who = result.status, user.username or user.user_id
    env = st.env
    what = f"python {env.python} + {len(env.requirements)} requirement(s)" if env else "server"
    if env is not None and not env.resources.default:
        what += f" ({describe_resources(env.resources)})"
    if st.previous is not None and st.phase != "failed":
        return (f"server for {who} being replaced with {what}: {st.phase}; the current one "
                f"keeps serving until the new one is ready (poll GET {prefix}/status)")
    if st.phase == "ready":
        tail = "ready for calls"
    elif st.phase == "failed":
        tail = f"failed: {st.reason or 'see log_tail'}"
    else:
        tail = f"{st.phase}; poll GET {prefix}/status until ready"
    if result.outcome == "created":
        head = f"server for {who} spawned with {what}"
    elif result.outcome == "unchanged":
        head = f"server for {who} already runs this environment ({what})"
    else:
        head = f"server for {who} replaced with {what} (previous server stopped)"
    return f"{head}: {tail}"
