"""zexec: run Python functions from a notebook or script on remote compute.

    import zexec

    zexec.connect("http://ep-api:8001", token="...")   # discovers Deploy API + broker
    zexec.environment(["numpy"])                       # your server, ready
    # or, straight to a broker: client = zexec.Client("tcp://broker:5559", token="...")

    @zexec.remote
    def add(a, b):
        return a + b

    add(5, 2)            # 7, computed on your server
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zexec.apps.client.api import (
        Client,
        RemoteFunction,
        RemoteIterator,
        get_default_client,
        remote,
        set_default_client,
    )
    from zexec.apps.client.connect import Connection, connect, environment, terminate
    from zexec.apps.client.debug import debug
    from zexec.core.errors import (
        AuthError,
        AuthUnavailable,
        BrokerUnreachable,
        Busy,
        CallCancelled,
        CallError,
        CallLost,
        CallTimeout,
        ControlPlaneError,
        EnvironmentConflict,
        EnvironmentFailed,
        EnvironmentTimeout,
        Forbidden,
        InvalidEnvironment,
        ProtocolError,
        RemoteError,
        RemoteExit,
        ResourceLimitExceeded,
        SerializationError,
        ServerGone,
        ServerUnavailable,
        ShuttingDown,
        TooLarge,
        Unauthenticated,
        UnknownSerializerError,
        VersionMismatch,
        WorkerDied,
        ZexecError,
    )

#: Where each public name lives. Imported on first use (PEP 562): the broker, the
#: servers and their workers import ``zexec.*`` modules too, and should not pay for the
#: client SDK (asyncio, httpx ...) at every process start.
_EXPORTS = {
    **dict.fromkeys(
        ("Client", "RemoteFunction", "RemoteIterator", "get_default_client", "remote",
         "set_default_client"), "zexec.apps.client.api"),
    **dict.fromkeys(("Connection", "connect", "environment", "terminate"),
                    "zexec.apps.client.connect"),
    "debug": "zexec.apps.client.debug",
    # IPython's hook for `%load_ext zexec` (not in __all__).
    "load_ipython_extension": "zexec.notebook.magics",
    # Every error an SDK call, connect() or environment() can raise.
    **dict.fromkeys(
        ("AuthError", "AuthUnavailable", "BrokerUnreachable", "Busy", "CallCancelled",
         "CallError", "CallLost", "CallTimeout", "ControlPlaneError",
         "EnvironmentConflict", "EnvironmentFailed", "EnvironmentTimeout",
         "Forbidden", "InvalidEnvironment", "ProtocolError", "RemoteError",
         "RemoteExit", "ResourceLimitExceeded", "SerializationError", "ServerGone",
         "ServerUnavailable", "ShuttingDown", "TooLarge", "Unauthenticated",
         "UnknownSerializerError", "VersionMismatch", "WorkerDied", "ZexecError"),
        "zexec.core.errors"),
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zexec' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "AuthUnavailable",
    "BrokerUnreachable",
    "Busy",
    "CallCancelled",
    "CallError",
    "CallLost",
    "CallTimeout",
    "Client",
    "Connection",
    "ControlPlaneError",
    "EnvironmentConflict",
    "EnvironmentFailed",
    "EnvironmentTimeout",
    "Forbidden",
    "InvalidEnvironment",
    "ProtocolError",
    "RemoteError",
    "RemoteExit",
    "RemoteFunction",
    "RemoteIterator",
    "ResourceLimitExceeded",
    "SerializationError",
    "ServerGone",
    "ServerUnavailable",
    "ShuttingDown",
    "TooLarge",
    "Unauthenticated",
    "UnknownSerializerError",
    "VersionMismatch",
    "WorkerDied",
    "ZexecError",
    "connect",
    "debug",
    "environment",
    "get_default_client",
    "remote",
    "set_default_client",
    "terminate",
]
