"""The embedded default orchestrator: per-user server processes on this machine, each in
a virtual environment built once per environment digest with ``uv``.

The names below load on first use (PEP 562): ``zexec up`` needs only
:mod:`~zexec.adapters.orchestrator_local.procs` to start the stack, and importing the
orchestrator (requirement parsing, environment store) first would delay every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zexec.adapters.orchestrator_local.orchestrator import LocalOrchestrator
    from zexec.adapters.orchestrator_local.pythons import discover_pythons, find_uv
    from zexec.adapters.orchestrator_local.servers import file_key, server_log

__all__ = ["LocalOrchestrator", "discover_pythons", "file_key", "find_uv", "server_log"]
_EXPORTS = {
    "LocalOrchestrator": "zexec.adapters.orchestrator_local.orchestrator",
    "file_key": "zexec.adapters.orchestrator_local.servers",
    "server_log": "zexec.adapters.orchestrator_local.servers",
    "discover_pythons": "zexec.adapters.orchestrator_local.pythons",
    "find_uv": "zexec.adapters.orchestrator_local.pythons",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
