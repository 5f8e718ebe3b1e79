"""Remote frames as real Python frames, so a remote exception reads and debugs like a
local one.

The worker sends, with an exception that escaped user code, a post-mortem of its frames
(:mod:`zexec.apps.server.postmortem`): file, line, columns, function name, local
variables. Here each becomes a real frame (the technique Jinja2 uses for template
tracebacks): a code object that raises at that line, compiled under the remote file name
and renamed after the remote function, is executed with the remote locals as its locals,
and the traceback entries of those executions are chained. The result is an ordinary
traceback: Python's and IPython's printers show each remote frame with its source line
(and IPython colours it), ``%debug`` / ``pdb.post_mortem`` walk it, and ``p name``
shows a remote local as it was (the value when it pickled small, else a stand-in whose
repr is the remote one).

Source lines come from this process's line cache: a function defined in a notebook cell
or a script keeps its file name remotely, and its source is here already (so nothing of
it travels with a call, and a cell shows as ``Cell In[3]``); lines of files that exist
only on the server come with the post-mortem and are added to the line cache under the
remote file name, unless a file of that name exists here.
"""

from __future__ import annotations

import ast
import linecache
import os
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any

#: Key in the globals of every remote frame; how :mod:`zexec.apps.client.tracebacks`
#: finds where the remote part of a traceback starts.
MARK = "__zexec_remote_frame__"
_RAISE = "__zexec_raise__"
#: Files whose line cache entry this module made (and may extend).
_ADDED: set[str] = set()


class RemoteRepr:
    """A remote local variable that did not travel by value (too large, or it does not
    pickle): it shows as its remote ``repr``."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class _Unwind(Exception):
    """Raised by each stand-in frame; only its traceback entries are kept."""


def is_remote(frame: Any) -> bool:
    """Whether ``frame`` stands for a remote frame."""
    return MARK in frame.f_globals


def _add_source(filename: str, source: Sequence[Any]) -> None:
    """Make the server's lines of ``filename`` readable here, unless this process has
    its own (a real file, or a notebook cell's entry)."""
    try:
        start, lines = int(source[0]), [str(s) for s in source[1]]
    except (TypeError, ValueError, IndexError):
        return
    if start < 1 or not lines:
        return
    ours = filename in _ADDED
    if not ours and (filename in linecache.cache or os.path.exists(filename)):
        return
    old = linecache.cache[filename][2] if ours else []
    text = list(old) + ["\n"] * max(0, start - 1 + len(lines) - len(old))
    for i, line in enumerate(lines):
        text[start - 1 + i] = line if line.endswith("\n") else line + "\n"
    linecache.cache[filename] = (sum(map(len, text)), None, text, filename)
    _ADDED.add(filename)


def _spans_line(filename: str, line: int) -> tuple[int, int]:
    """Columns (in UTF-8 bytes) of ``line``'s text without its indentation: positions
    that make printers show the line without carets."""
    text = linecache.getline(filename, line).rstrip("\r\n")
    indent = len(text) - len(text.lstrip())
    return len(text[:indent].encode()), len(text.encode())


def _raising_code(entry: dict[str, Any]) -> Any:
    """A code object named like the remote function, in the remote file, whose only
    statement raises at the remote line and columns."""
    filename, line = str(entry["file"]), int(entry["line"])
    end_line, col, end_col = entry.get("end_line"), entry.get("col"), entry.get("end_col")
    if not (isinstance(end_line, int) and isinstance(col, int) and isinstance(end_col, int)
            and end_line >= line and (end_line > line or end_col >= col) and col >= 0):
        end_line = line
        col, end_col = _spans_line(filename, line)
    where = {"lineno": line, "col_offset": col, "end_lineno": end_line,
             "end_col_offset": end_col}
    raise_ = ast.Raise(exc=ast.Name(id=_RAISE, ctx=ast.Load(), **where), cause=None, **where)
    code = compile(ast.Module(body=[raise_], type_ignores=[]), filename, "exec")
    name = str(entry.get("name") or "?")
    return code.replace(co_name=name, co_qualname=name)


def _local_values(entry: dict[str, Any], blobs: Sequence[Any], serializer: Any
                  ) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in entry.get("locals") or ():
        try:
            name, text, index = str(item[0]), str(item[1]), int(item[2])
        except (TypeError, ValueError, IndexError):
            continue
        value: Any = RemoteRepr(text)
        if 0 <= index < len(blobs) and serializer is not None:
            try:
                value = serializer.loads([blobs[index]])
            except Exception:  # noqa: BLE001 - e.g. a class that exists only remotely
                pass
        values[name] = value
    return values


def _frame_tb(entry: dict[str, Any], blobs: Sequence[Any], serializer: Any
              ) -> TracebackType | None:
    """The traceback entry of one stand-in frame for the remote frame ``entry``."""
    filename = str(entry["file"])
    if entry.get("source"):
        _add_source(filename, entry["source"])
    code = _raising_code(entry)
    frame_globals = {"__name__": str(entry.get("module") or ""), "__file__": filename,
                     MARK: True, _RAISE: _Unwind()}
    try:
        exec(code, frame_globals, _local_values(entry, blobs, serializer))
    except _Unwind:
        tb = sys.exc_info()[2]
    else:  # pragma: no cover - the code always raises
        return None
    del frame_globals[_RAISE]
    return tb.tb_next if tb is not None else None


def remote_traceback(postmortem: dict[str, Any], blobs: Sequence[Any],
                     serializer: Any) -> TracebackType | None:
    """The chained stand-in frames of a post-mortem, outermost first (None if it holds
    no frames). Raises on a malformed post-mortem; the caller falls back to text."""
    head: TracebackType | None = None
    last: TracebackType | None = None
    for entry in postmortem.get("frames") or ():
        tb = _frame_tb(entry, blobs, serializer)
        if tb is None:
            continue
        if last is None:
            head = tb
        else:
            last.tb_next = tb
        last = tb
    return head


def remote_part(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` from its first remote frame on (None if it has none)."""
    while tb is not None and not is_remote(tb.tb_frame):
        tb = tb.tb_next
    return tb
