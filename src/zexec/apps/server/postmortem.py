"""What a worker keeps of an exception that escaped user code, for a post-mortem on the
client (``%debug``, ``zexec.debug(exc)``).

Captured only on the error path (a call that returns costs nothing), from the
exception's traceback with zexec's own leading frames removed: for each frame (the
innermost :data:`MAX_FRAMES`), its file, line, the column range of the failing
expression, its function name, a few lines of source around the line when the file
exists here (a notebook cell's source lives on the client, which shows it from its own
line cache), and its local variables: each one's ``repr`` (bounded by :data:`REPR_CHARS`)
and, when it pickles small, its value, pickled on its own with the call's serializer so
that one local the client cannot unpickle does not cost the others.

Bounds: :data:`VALUE_BYTES` per value, :data:`TOTAL_BYTES` of values and
:data:`TOTAL_REPR_CHARS` of reprs per error, innermost frames first, so the error event
stays small whatever the failing code held (a 1 GiB array is a repr).
"""

from __future__ import annotations

import inspect
import linecache
import os
import reprlib
import sys
from collections.abc import Callable
from itertools import islice
from types import TracebackType
from typing import Any

import zexec

#: Frames kept (the innermost ones; a deep recursion loses its outer frames).
MAX_FRAMES = 32
#: Local variables kept per frame (in the frame's order).
MAX_LOCALS = 64
#: A value whose pickle would exceed this is sent as its repr only.
VALUE_BYTES = 64 * 1024
#: Pickled values of one error, at most.
TOTAL_BYTES = 1024 * 1024
#: Characters of one repr, and of all reprs of one error.
REPR_CHARS = 400
TOTAL_REPR_CHARS = 256 * 1024
#: Lines of source sent either side of a frame's line (when the file exists here).
CONTEXT = 8
#: Characters of one source line sent.
LINE_CHARS = 400

_ZEXEC_DIR = os.path.dirname(os.path.abspath(zexec.__file__)) + os.sep

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = REPR_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxfrozenset = 20
_repr.maxdict = _repr.maxdeque = _repr.maxarray = 20
_repr.maxlevel = 3


def first_user_frame(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without its leading zexec frames (the worker, ``run_batch``, the
    ``%%remote`` runner): they only lead into the user's code."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_ZEXEC_DIR):
        tb = tb.tb_next
    return tb


def safe_repr(value: Any) -> str:
    """A bounded repr that never raises (a broken ``__repr__`` is the user's bug, not a
    reason to lose the error)."""
    try:
        text = _repr.repr(value)
    except Exception as exc:  # noqa: BLE001 - any failure of user code
        return f"<{type(value).__name__} object; repr() failed: {type(exc).__name__}>"
    return text if len(text) <= REPR_CHARS else text[:REPR_CHARS - 3] + "..."


def _clearly_too_big(value: Any) -> bool:
    """Whether ``value`` is known to pickle larger than VALUE_BYTES without pickling it
    (arrays and buffers say their size; containers at least their own)."""
    try:
        nbytes = getattr(value, "nbytes", None)
        if isinstance(nbytes, int) and nbytes > VALUE_BYTES:
            return True
        return sys.getsizeof(value) > VALUE_BYTES
    except Exception:  # noqa: BLE001 - a hostile __getattr__ / __sizeof__
        return True


def _positions(tb: TracebackType) -> tuple[int, int | None, int | None, int | None]:
    """(line, end line, column, end column) of the instruction ``tb`` stopped at."""
    code = tb.tb_frame.f_code
    try:
        pos = next(islice(code.co_positions(), tb.tb_lasti // 2, None))
    except (StopIteration, ValueError):
        return tb.tb_lineno, None, None, None
    line, end_line, col, end_col = pos
    if line != tb.tb_lineno:
        return tb.tb_lineno, None, None, None
    return tb.tb_lineno, end_line, col, end_col


def _source(filename: str, line: int, module_globals: dict[str, Any]) -> list[Any] | None:
    """``[first line number, [lines]]`` around ``line`` when the file can be read here."""
    if filename.startswith("<") and filename not in linecache.cache:
        return None
    lines = linecache.getlines(filename, module_globals)
    if not lines or line > len(lines):
        return None
    start = max(1, line - CONTEXT)
    window = lines[start - 1:line + CONTEXT]
    return [start, [text[:LINE_CHARS] for text in window]]


def _arg_count(code: Any) -> int:
    """How many of ``code``'s variable names are its parameters (``*args`` and
    ``**kwargs`` included)."""
    flags = code.co_flags
    return (code.co_argcount + code.co_kwonlyargcount
            + bool(flags & inspect.CO_VARARGS) + bool(flags & inspect.CO_VARKEYWORDS))


class _Budget:
    def __init__(self) -> None:
        self.value_bytes = TOTAL_BYTES
        self.repr_chars = TOTAL_REPR_CHARS


def _locals(frame_locals: dict[str, Any], dumps: Callable[[Any], bytes], budget: _Budget,
            blobs: list[bytes]) -> list[list[Any]]:
    """``[name, repr, blob index or -1]`` of each local (dunder names left out)."""
    out: list[list[Any]] = []
    for name, value in list(frame_locals.items()):
        if name.startswith("__") and name.endswith("__"):
            continue
        if len(out) >= MAX_LOCALS or budget.repr_chars <= 0:
            break
        text = safe_repr(value)
        budget.repr_chars -= len(text)
        index = -1
        if budget.value_bytes > 0 and not _clearly_too_big(value):
            try:
                blob = dumps(value)
            except Exception:  # noqa: BLE001 - unpicklable: the repr stays
                blob = None
            if blob is not None and len(blob) <= min(VALUE_BYTES, budget.value_bytes):
                budget.value_bytes -= len(blob)
                index = len(blobs)
                blobs.append(blob)
        out.append([str(name), text, index])
    return out


def capture(exc: BaseException, dumps: Callable[[Any], bytes] | None
            ) -> tuple[dict[str, Any], list[bytes]]:
    """The post-mortem of ``exc`` (a JSON-able dict for the error event's header) and the
    pickled local values it refers to by index. ``dumps`` pickles one value into one
    bytes object (None: reprs only)."""
    tbs: list[TracebackType] = []
    tb = first_user_frame(exc.__traceback__)
    while tb is not None:
        tbs.append(tb)
        tb = tb.tb_next
    skipped = max(0, len(tbs) - MAX_FRAMES)
    tbs = tbs[skipped:]
    frames: list[dict[str, Any]] = []
    for tb in tbs:
        frame = tb.tb_frame
        line, end_line, col, end_col = _positions(tb)
        code = frame.f_code
        entry: dict[str, Any] = {
            "file": code.co_filename, "name": code.co_name,
            "module": str(frame.f_globals.get("__name__", "")),
            "first_line": code.co_firstlineno,
            "args": list(code.co_varnames[:_arg_count(code)]),
            "line": line, "end_line": end_line, "col": col, "end_col": end_col,
        }
        source = _source(code.co_filename, line, frame.f_globals)
        if source is not None:
            entry["source"] = source
        frames.append(entry)
    budget = _Budget()
    blobs: list[bytes] = []
    for entry, tb in zip(reversed(frames), reversed(tbs), strict=True):  # innermost first
        entry["locals"] = _locals(
            tb.tb_frame.f_locals, dumps or _no_dumps, budget, blobs)
    chained = exc.__cause__ is not None or (
        exc.__context__ is not None and not exc.__suppress_context__)
    return {"frames": frames, "skipped": skipped, "chained": chained}, blobs


def attach(fields: dict[str, Any], exc: BaseException, serializer: Any) -> list[bytes]:
    """Add the post-mortem of ``exc`` to an error event's ``fields``; returns its value
    frames. Never raises: a post-mortem that cannot be made must not cost the error."""

    def dumps(value: Any) -> bytes:
        return bytes(serializer.dumps(value, out_of_band=False)[0])

    try:
        fields["postmortem"], blobs = capture(exc, dumps if serializer else None)
    except Exception as failure:  # noqa: BLE001
        sys.__stderr__.write(f"zexec worker: no post-mortem ({failure!r})\n")
        return []
    return blobs


def _no_dumps(value: Any) -> bytes:
    raise TypeError("no serializer")
