"""``POST {prefix}/pool/bind``: a warm-pool pod's server asks which user adopted it.

A long poll: the pod (its per-pod key as the Bearer token, ``{"pod": name, "wait":
seconds}`` as the body) gets 200 ``{"user_id", "credential"}`` once a spawn has claimed
it, 204 when ``wait`` passed first (it asks again), 403 when its key is wrong, it is
not a pool pod, or it had its binding already (never twice). ``POST
{prefix}/pool/registered`` (same key, ``{"pod": name}``): the bound server registered
with the broker, so its user's status is ready without waiting for the readiness probe. The route exists when the
orchestrator has a warm pool (:class:`zexec.core.ports.PoolBinder`); it takes no user
token: pool pods have no user yet. Not in the OpenAPI schema: it is not for users.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from zexec.apps.http_common import bearer_token, error_response
from zexec.core.ports import PoolBinder

#: The longest a binding request is held open, in seconds (below common proxy timeouts).
MAX_WAIT = 25.0
#: Seconds between two looks at the pod while a request waits: at most what an adoption
#: by another Deploy API replica adds to a spawn (one by this replica wakes the request
#: at once), against one pod read per interval per waiting pool pod.
POLL_INTERVAL = 0.5


async def _bind_request(request: Request) -> tuple[str, float]:
    try:
        body: Any = json.loads(await request.body() or b"{}")
    except ValueError:
        body = None
    pod = body.get("pod") if isinstance(body, dict) else None
    wait = body.get("wait", MAX_WAIT) if isinstance(body, dict) else None
    if not isinstance(pod, str) or not pod or isinstance(wait, bool) or \
            not isinstance(wait, int | float):
        raise ValueError('the body must be {"pod": "<name>", "wait": <seconds>}')
    return pod, min(max(float(wait), 0.0), MAX_WAIT)


def add_pool_routes(app: FastAPI, prefix: str, binder: PoolBinder,
                    poll_interval: float = POLL_INTERVAL) -> None:
    """Add the binding route for ``binder`` under ``prefix``."""

    @app.post(prefix + "/pool/bind", include_in_schema=False)
    async def pool_bind(request: Request) -> Response:
        key = bearer_token(request) or ""
        try:
            pod, wait = await _bind_request(request)
        except ValueError as exc:
            return error_response(422, str(exc))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                got = await run_in_threadpool(binder.bind, pod, key)
            except PermissionError as exc:
                return error_response(403, f"pool binding refused: {exc}")
            if got is not None:
                return JSONResponse({"user_id": got[0], "credential": got[1]})
            left = deadline - loop.time()
            if left <= 0:
                return Response(status_code=204)
            await run_in_threadpool(binder.wait, pod, min(poll_interval, left))

    @app.post(prefix + "/pool/registered", include_in_schema=False)
    async def pool_registered(request: Request) -> Response:
        key = bearer_token(request) or ""
        try:
            pod, _ = await _bind_request(request)
            await run_in_threadpool(binder.registered, pod, key)
        except ValueError as exc:
            return error_response(422, str(exc))
        except PermissionError as exc:
            return error_response(403, f"refused: {exc}")
        return Response(status_code=204)
