"""Remote frames as real Python frames, so a remote exception reads and debugs like a
local one.

The worker sends, with an exception that escaped user code, a post-mortem of its frames
(:mod:`zexec.apps.server.postmortem`): file, line, columns, function name, parameters,
local variables. Here each becomes a real frame (the technique Jinja2 uses for template
tracebacks): a function compiled under the remote file name, starting at the remote
function's first line, named after it, with its parameters, that binds the remote locals
and raises at the remote line and columns, is called, and the traceback entries of those
calls are chained. The result is an ordinary
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
import inspect
import linecache
import os
import sys
from collections.abc import Sequence
from types import CodeType, FunctionType, TracebackType
from typing import Any

#: Key in the globals of every remote frame; how :mod:`zexec.apps.client.tracebacks`
#: finds where the remote part of a traceback starts.
MARK = "__zexec_remote_frame__"
_RAISE = "__zexec_raise__"
_LOCALS = "__zexec_locals__"
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


def _positions(entry: dict[str, Any]) -> dict[str, int]:
    """Where the stand-in's raise is: the remote failing expression's line and columns,
    or the whole line when those are missing or inconsistent."""
    filename, line = str(entry["file"]), int(entry["line"])
    end_line, col, end_col = entry.get("end_line"), entry.get("col"), entry.get("end_col")
    if not (isinstance(end_line, int) and isinstance(col, int) and isinstance(end_col, int)
            and end_line >= line and (end_line > line or end_col >= col) and col >= 0):
        end_line = line
        col, end_col = _spans_line(filename, line)
    return {"lineno": line, "col_offset": col, "end_lineno": end_line,
            "end_col_offset": end_col}


def _stand_in(entry: dict[str, Any], names: list[str]) -> tuple[CodeType, list[str]]:
    """The code of a stand-in for the remote frame ``entry`` and its parameter names.

    For a function frame: a function whose parameters are the remote function's (so
    ``inspect`` and IPython show ``in check(scaled)``), that starts at the remote
    function's first line (IPython and ``inspect`` find its source block there), binds
    the other remote ``names`` from ``__zexec_locals__`` and raises at the remote line.
    For a module-level frame: module code that raises there (run with the remote locals
    as its namespace)."""
    where = _positions(entry)
    filename, name = str(entry["file"]), str(entry.get("name") or "?")
    raise_ = ast.Raise(exc=ast.Name(id=_RAISE, ctx=ast.Load(), **where), cause=None, **where)
    if name == "<module>":
        code = compile(ast.Module(body=[raise_], type_ignores=[]), filename, "exec")
        return code, []
    args = [a for a in entry.get("args") or () if isinstance(a, str) and a.isidentifier()]
    binds = [
        ast.Assign(
            targets=[ast.Name(id=n, ctx=ast.Store(), **where)],
            value=ast.Subscript(value=ast.Name(id=_LOCALS, ctx=ast.Load(), **where),
                                slice=ast.Constant(value=n, **where), ctx=ast.Load(), **where),
            **where)
        for n in names if n not in args
    ]
    first = entry.get("first_line")
    first = first if isinstance(first, int) and 0 < first <= where["lineno"] else where["lineno"]
    define = ast.FunctionDef(
        name="stand_in", body=[*binds, raise_], decorator_list=[], returns=None,
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=a) for a in args], vararg=None,
                           kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]),
        lineno=first, col_offset=0, end_lineno=where["end_lineno"], end_col_offset=0)
    module = compile(ast.fix_missing_locations(ast.Module(body=[define], type_ignores=[])),
                     filename, "exec")
    code = next(c for c in module.co_consts if isinstance(c, CodeType))
    return code.replace(co_name=name, co_qualname=name), args


def _local_values(entry: dict[str, Any], blobs: Sequence[Any], serializer: Any
                  ) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in entry.get("locals") or ():
        try:
            name, text, index = str(item[0]), str(item[1]), int(item[2])
        except (TypeError, ValueError, IndexError):
            continue
        if not name.isidentifier():
            continue  # e.g. a comprehension's ".0"
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
    values = _local_values(entry, blobs, serializer)
    code, args = _stand_in(entry, list(values))
    frame_globals = {"__name__": str(entry.get("module") or ""), "__file__": filename,
                     MARK: True, _RAISE: _Unwind(), _LOCALS: values}
    try:
        if args or code.co_flags & inspect.CO_OPTIMIZED:
            missing = RemoteRepr("<not captured>")
            FunctionType(code, frame_globals)(**{a: values.get(a, missing) for a in args})
        else:
            exec(code, frame_globals, values)
    except _Unwind:
        tb = sys.exc_info()[2]
    else:  # pragma: no cover - the code always raises
        return None
    del frame_globals[_RAISE], frame_globals[_LOCALS]
    # The stand-in is one or two entries below this frame (two for a function).
    while tb is not None and tb.tb_frame.f_code is not code:
        tb = tb.tb_next
    return tb


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
