"""Where the printed output of a remote call goes: where the caller was when it started
the call.

The output arrives later, on whichever thread drives the connection, possibly after the
cell that made the call finished and while another one runs. So the destination is
fixed when the call starts: the streams that were ``sys.stdout`` / ``sys.stderr`` then
(a ``contextlib.redirect_stdout`` or IPython's ``%%capture`` around the call catches its
remote output too), and inside a Jupyter kernel the cell that was running then: its
output message parent header, re-established for each write through the kernel's
``set_thread_parent`` (ipykernel >= 7; it keeps one output buffer per parent), so a
``.submit()`` of cell 1 still prints into cell 1 while cell 2 runs. With an older
ipykernel the output goes to the cell running when it arrives.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from zexec.apps.client.progress import kernel_shell

Writer = Callable[[str, str], None]


def _stream_writer(out: TextIO, err: TextIO) -> Writer:
    def write(channel: str, text: str) -> None:
        stream = err if channel == "stderr" else out
        stream.write(text)
        stream.flush()  # live output in a terminal or a log

    return write


def _cell_writer(shell: Any, out: TextIO, err: TextIO) -> Writer:
    parent = shell.get_parent()

    def write(channel: str, text: str) -> None:
        tokens = shell.set_thread_parent(parent)
        try:
            # No flush: the kernel flushes its buffers itself, and a flush from this
            # thread would wait for the kernel's I/O thread at every event.
            (err if channel == "stderr" else out).write(text)
        finally:
            shell.reset_thread_parent(tokens)

    return write


def writer_here() -> Writer:
    """The writer for the output of a call started now, by this thread."""
    out, err = sys.stdout, sys.stderr
    shell = kernel_shell()
    if shell is not None and hasattr(shell, "set_thread_parent") \
            and hasattr(shell, "get_parent"):
        return _cell_writer(shell, out, err)
    return _stream_writer(out, err)
