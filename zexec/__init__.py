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

from zexec.apps.client.api import (
    Client,
    RemoteFunction,
    RemoteIterator,
    get_default_client,
    remote,
    set_default_client,
)
from zexec.apps.client.connect import Connection, connect, environment, terminate
from zexec.core.errors import (
    BrokerUnreachable,
    CallCancelled,
    CallLost,
    CallTimeout,
    ControlPlaneError,
    EnvironmentConflict,
    EnvironmentFailed,
    EnvironmentTimeout,
    InvalidEnvironment,
    RemoteError,
    ServerGone,
    ServerUnavailable,
    VersionMismatch,
    ZexecError,
)

__version__ = "0.1.0"

__all__ = [
    "BrokerUnreachable",
    "CallCancelled",
    "CallLost",
    "CallTimeout",
    "Client",
    "Connection",
    "ControlPlaneError",
    "EnvironmentConflict",
    "EnvironmentFailed",
    "EnvironmentTimeout",
    "InvalidEnvironment",
    "RemoteError",
    "RemoteFunction",
    "RemoteIterator",
    "ServerGone",
    "ServerUnavailable",
    "VersionMismatch",
    "ZexecError",
    "connect",
    "environment",
    "get_default_client",
    "remote",
    "set_default_client",
    "terminate",
]
