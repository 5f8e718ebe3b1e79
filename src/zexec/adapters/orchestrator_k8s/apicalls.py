"""Calling the Kubernetes API from the orchestrator: its errors as
:class:`~zexec.core.errors.OrchestratorError` naming the step, and responses as the plain
JSON the API server sent."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes.client.exceptions import ApiException

from zexec.core.errors import OrchestratorError


@contextmanager
def api_errors(what: str, ok: tuple[int, ...] = ()) -> Iterator[None]:
    """Turn API errors into OrchestratorError naming the step; statuses in ``ok`` pass."""
    try:
        yield
    except ApiException as e:
        if e.status in ok:
            return
        raise OrchestratorError(f"Kubernetes API error while {what}: {e.status} {e.reason}") from e


def raw(call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Call the client without its response models and return the JSON as sent. The
    models are stricter than the API server (a status missing a field fails to load)
    and :mod:`.podstatus` wants the plain dict anyway."""
    return json.loads(call(*args, _preload_content=False, **kwargs).data)
