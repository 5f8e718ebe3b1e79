"""Frame layouts of zexec's two wire protocols, as pure encode/decode functions.

No sockets here: every function takes and returns lists of frames (``bytes`` or any
buffer), so the framing is tested without I/O. ``docs/protocol.md`` is the written spec;
this module is its executable form and the two must agree.

Every frame layout lives in this package, one module per channel:

* :mod:`~zexec.core.protocol.common`: the marker, verbs, header frames, credentials;
* :mod:`~zexec.core.protocol.client`: client <-> broker (the frontend);
* :mod:`~zexec.core.protocol.backend`: broker <-> server and worker (the backend);
* :mod:`~zexec.core.protocol.channel`: server <-> worker (the server's private ipc);
* :mod:`~zexec.core.protocol.control`: the broker's control port;
* :mod:`~zexec.core.protocol.legacy`: the legacy (scidx-rexec) reply stream, and the
  events that end a call in either protocol.

``from zexec.core import protocol as p`` gives the names of all but ``channel`` (whose
short names, ``hello``, ``task``, ``done`` ..., read best qualified by it).
"""

from __future__ import annotations

from zexec.core.protocol.backend import *  # noqa: F403
from zexec.core.protocol.client import *  # noqa: F403
from zexec.core.protocol.common import *  # noqa: F403
from zexec.core.protocol.control import *  # noqa: F403
from zexec.core.protocol.legacy import *  # noqa: F403
