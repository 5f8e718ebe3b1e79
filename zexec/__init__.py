"""zexec: run Python functions from a notebook or script on remote compute.

    import zexec

    client = zexec.Client("tcp://broker:5559", token="...")

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
from zexec.core.errors import (
    BrokerUnreachable,
    CallCancelled,
    CallLost,
    CallTimeout,
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
    "RemoteError",
    "RemoteFunction",
    "RemoteIterator",
    "ServerGone",
    "ServerUnavailable",
    "VersionMismatch",
    "ZexecError",
    "get_default_client",
    "remote",
    "set_default_client",
]
