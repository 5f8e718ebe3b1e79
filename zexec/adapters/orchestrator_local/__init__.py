"""The embedded default orchestrator: per-user server processes on this machine, each in
a virtual environment built once per environment digest with ``uv``."""

from zexec.adapters.orchestrator_local.orchestrator import LocalOrchestrator, file_key
from zexec.adapters.orchestrator_local.pythons import discover_pythons, find_uv

__all__ = ["LocalOrchestrator", "discover_pythons", "file_key", "find_uv"]
