"""``%load_ext zexec``: the ``%%remote`` cell magic and the ``%zexec`` line magic.

``%%remote [names ...] [--timeout SECONDS]`` runs the cell on your server: the notebook
variables the cell reads go with it (pickled as call arguments), the variables named on
the magic's line come back into the notebook, and the value of the cell's last
expression is the cell's result. Printed output streams into the cell as with any remote
call, and an error shows the cell's lines (the cell's code is registered under the
notebook's own name for it, ``Cell In[N]``).

``%zexec status`` shows the connection (user, broker, encrypted or not) and your server
(phase, environment).
"""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from zexec.apps.client.tracebacks import public

#: Notebook names never sent to the server: IPython's own.
_IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit"})


@magics_class
class ZexecMagics(Magics):
    @magic_arguments()
    @argument("names", nargs="*", help="variables the cell defines to bring back")
    @argument("--timeout", type=float, default=None,
              help="stop the remote work after this many seconds")
    @cell_magic
    def remote(self, line: str, cell: str) -> Any:
        """Run this cell on your zexec server; bring back the variables named on the
        magic's line. The notebook variables the cell reads are sent along; the value of
        its last expression is the cell's result."""
        __tracebackhide__ = True
        args = parse_argstring(self.remote, line)
        return _run_remote_cell(self.shell, line, cell, list(args.names), args.timeout)

    @line_magic
    def zexec(self, line: str) -> Any:
        """``%zexec status``: your connection and server (phase, environment)."""
        from zexec.apps.client.connect import default_connection

        words = line.split()
        if words != ["status"]:
            raise UsageError("usage: %zexec status")
        conn = default_connection()
        conn.status()  # fresh, for the one-line text too
        return conn


@public
def _run_remote_cell(shell: Any, line: str, cell: str, names: list[str],
                     timeout: float | None) -> Any:
    """``%%remote``: the cell's notebook inputs go, its ``names`` come back."""
    from zexec.apps.client.api import remote
    from zexec.core.errors import SerializationError
    from zexec.notebook.cell import names_read, run_cell

    source = "\n" + cell  # line 1 is the magic's: the cell's line numbers hold
    try:
        wanted = names_read(source)
    except SyntaxError as exc:
        raise UsageError(f"%%remote: the cell is not valid Python: {exc}") from None
    ns = shell.user_ns
    inputs = {n: ns[n] for n in sorted(wanted)
              if n in ns and n not in _IPYTHON_NAMES and not n.startswith("_")}
    # The cell's text as the user sees it, under a name IPython shows as this cell's.
    shown = f"%%remote {line}".rstrip() + "\n" + cell
    filename = shell.compile.cache(shown, _cell_number(shell), raw_code=shown)
    runner = remote(run_cell, timeout=timeout)
    try:
        values, value = runner(source, filename, inputs, names)
    except SerializationError:
        culprit = _unsendable(runner, inputs)
        if culprit is None:
            raise
        raise UsageError(f"%%remote: the notebook variable {culprit[0]!r} cannot be sent "
                         f"to your server ({culprit[1]}); compute it inside the cell "
                         "instead") from None
    ns.update(values)
    return value


def _cell_number(shell: Any) -> int:
    """The number of the cell running now (``In[N]``): that of the nearest calling
    frame whose file is a cell (IPython versions differ on when they count)."""
    frame = sys._getframe(1)
    while frame is not None:
        label = shell.compile.format_code_name(frame.f_code.co_filename)
        if label and label[1].startswith("In["):
            return int(label[1][3:-1])
        frame = frame.f_back
    return shell.execution_count


def _unsendable(runner: Any, inputs: dict[str, Any]) -> tuple[str, str] | None:
    from zexec.adapters.serializer import default_registry

    client = runner._client()
    serializer = default_registry().get(runner.serializer or client.serializer.name)
    for name, value in inputs.items():
        try:
            serializer.dumps(value)
        except Exception as exc:  # noqa: BLE001 - whatever pickling raised
            return name, str(exc)
    return None


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext zexec``."""
    ipython.register_magics(ZexecMagics)
