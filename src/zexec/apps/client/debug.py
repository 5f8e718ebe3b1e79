"""``zexec.debug()``: a post-mortem debugger on the remote frames of an exception."""

from __future__ import annotations

import sys

from zexec.apps.client.remote_frames import remote_part
from zexec.core.errors import ConfigurationError


def debug(exc: BaseException | None = None) -> None:
    """Open pdb on the remote frames of ``exc`` (default: the last exception that reached
    the top level, as ``%debug`` and ``pdb.pm()`` use), at the frame that raised.

    ``p name`` shows a local variable as it was when the remote code failed: the value
    itself when it pickled small, else its remote ``repr``; ``up`` / ``down`` / ``where``
    / ``list`` walk and show the remote frames with their source. In IPython and Jupyter
    IPython's debugger is used (``%debug`` does the same for the last error), elsewhere
    :mod:`pdb`. An exception without remote frames is debugged as it is.
    """
    if exc is None:
        exc = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
        if exc is None:
            raise ConfigurationError(
                "no exception to debug: pass one (zexec.debug(exc)) or call this right "
                "after an error reached the top level")
    tb = remote_part(exc.__traceback__) or exc.__traceback__
    if tb is None:
        raise ConfigurationError(f"{type(exc).__name__} has no traceback to debug")
    debugger = _ipython_debugger()
    if debugger is None:
        import pdb

        debugger = pdb.Pdb()
    debugger.reset()
    debugger.interaction(None, tb)


def _ipython_debugger() -> object | None:
    """IPython's debugger (colours, hidden frames) when running under IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return None
    return shell.debugger_cls()
