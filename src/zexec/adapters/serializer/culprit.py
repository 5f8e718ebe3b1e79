"""Which part of a value cannot be pickled, said so that the user can fix it.

When pickling fails, the pickler's message names a type (``cannot pickle
'_thread.lock' object``) but not where it sits. :func:`find` pickles the parts one by
one (a function's globals, closure variables and defaults; items, keys and attributes
of containers and objects) and follows the first part that fails down to the object
that is the culprit; :func:`message` turns that path into one sentence:

    the global `lock` (a _thread.lock) captured by `work` cannot be pickled:
    create it inside the function (each process needs its own)

The search runs only after a failure, pickles at most :data:`MAX_TRIES` parts, and
never raises.
"""

from __future__ import annotations

import io
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

MAX_TRIES = 200
MAX_DEPTH = 8
MAX_CHILDREN = 100

#: What to do about a type that cannot travel, by its qualified name's start.
HINTS = (
    (("_thread.", "threading.", "multiprocessing.synchronize."),
     "create it inside the function (each process needs its own)"),
    (("_io.", "io.", "tempfile."),
     "open the file inside the function (the server has its own files; files are not "
     "copied)"),
    (("socket.", "ssl.", "sqlite3.", "zmq.", "http.client.", "select."),
     "open the connection inside the function"),
    (("builtins.generator", "builtins.coroutine", "builtins.frame"),
     "create it inside the function"),
)
DEFAULT_HINT = "create it inside the function, or pass the data it needs as an argument"


@dataclass(frozen=True)
class Step:
    """One step from a value to a part of it: ``kind`` is ``global``, ``closure``,
    ``default`` (of a function ``owner``), ``item`` (``[name]``) or ``attr``
    (``.name``)."""

    kind: str
    name: str
    owner: str = ""


def type_name(obj: Any) -> str:
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _parts(obj: Any) -> Iterator[tuple[Step, Any]]:
    """The parts pickling ``obj`` pickles too, each with the step that leads to it."""
    from zexec.adapters.serializer.localmods import Bundle

    if isinstance(obj, Bundle):
        obj = obj.fn
    if isinstance(obj, types.FunctionType):
        code, owner = obj.__code__, obj.__name__
        for name, cell in zip(code.co_freevars, obj.__closure__ or (), strict=False):
            try:
                yield Step("closure", name, owner), cell.cell_contents
            except ValueError:
                continue
        names = _global_names(code)
        for name in sorted(names):
            if name in obj.__globals__:
                yield Step("global", name, owner), obj.__globals__[name]
        params = code.co_varnames[:code.co_argcount]
        for name, value in zip(params[len(params) - len(obj.__defaults__ or ()):],
                               obj.__defaults__ or (), strict=False):
            yield Step("default", name, owner), value
        for name, value in (obj.__kwdefaults__ or {}).items():
            yield Step("default", name, owner), value
        for name, value in vars(obj).items():
            yield Step("attr", name), value
        return
    if isinstance(obj, dict):
        for i, (k, v) in enumerate(obj.items()):
            if i >= MAX_CHILDREN:
                return
            yield Step("item", repr(k)), v
            yield Step("item", f"<key {k!r}>"), k
        return
    if isinstance(obj, list | tuple | set | frozenset):
        for i, v in enumerate(obj):
            if i >= MAX_CHILDREN:
                return
            yield Step("item", str(i)), v
        return
    state = getattr(obj, "__dict__", None)
    if isinstance(state, dict) and not isinstance(obj, type | types.ModuleType):
        for i, (k, v) in enumerate(state.items()):
            if i >= MAX_CHILDREN:
                return
            yield Step("attr", str(k)), v
    for slot in getattr(type(obj), "__slots__", ()) or ():
        if isinstance(slot, str) and hasattr(obj, slot):
            yield Step("attr", slot), getattr(obj, slot)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def find(obj: Any, pickles: Callable[[Any], bool]) -> tuple[list[Step], Any]:
    """The path to the innermost part of ``obj`` that does not pickle on its own
    (``pickles(part)`` says whether it does), and that part."""
    path: list[Step] = []
    tries = 0
    while len(path) < MAX_DEPTH:
        if path and hint(obj) != DEFAULT_HINT:
            return path, obj  # a lock, a file, a socket: what the user put there
        for step, part in _parts(obj):
            tries += 1
            if tries > MAX_TRIES:
                return path, obj
            if part is obj or isinstance(part, type | types.ModuleType):
                continue
            if not pickles(part):
                path.append(step)
                obj = part
                break
        else:
            return path, obj
    return path, obj


def _expression(path: list[Step]) -> str:
    out = path[0].name
    for step in path[1:]:
        out += f".{step.name}" if step.kind == "attr" else f"[{step.name}]"
    return out


def _head(step: Step) -> str:
    if step.kind == "global":
        return f"the global `{step.name}` captured by `{step.owner}`"
    if step.kind == "closure":
        return f"the variable `{step.name}` of the scope enclosing `{step.owner}`"
    if step.kind == "default":
        return f"the default of parameter `{step.name}` of `{step.owner}`"
    return f"`{step.name}`"


def hint(culprit: Any) -> str:
    name = type_name(culprit)
    if isinstance(culprit, io.IOBase):
        name = "io."
    for prefixes, text in HINTS:
        if name.startswith(prefixes):
            return text
    return DEFAULT_HINT


def what(culprit: Any) -> str:
    """``a _thread.lock`` or ``an open file '/tmp/x'``."""
    if isinstance(culprit, io.IOBase):
        return f"an open file {getattr(culprit, 'name', '?')!r}"
    return f"a {type_name(culprit)}"


def args_root(path: list[Step], function: str) -> tuple[str, list[Step]]:
    """For a path into a call's ``(args, kwargs)``: the argument it starts at, and the
    rest of the path."""
    if len(path) >= 2 and path[0].kind == path[1].kind == "item":
        if path[0].name == "0" and path[1].name.isdigit():
            return f"argument {int(path[1].name) + 1} of `{function}`", path[2:]
        if path[0].name == "1" and not path[1].name.startswith("<key"):
            return f"keyword argument `{path[1].name.strip(chr(39))}` of `{function}`", \
                path[2:]
    return f"the arguments of `{function}`", path


def message(path: list[Step], culprit: Any, root: str = "the value") -> str:
    """One sentence: where the culprit is, what it is, what to do."""
    if not path:
        where = f"{root} ({what(culprit)})"
    elif path[0].kind in ("global", "closure", "default"):
        head = _head(path[0])
        if len(path) == 1:
            # "the global `lock` (a _thread.lock) captured by `f`"
            i = head.index("`", head.index("`") + 1) + 1
            where = f"{head[:i]} ({what(culprit)}){head[i:]}"
        else:
            where = f"`{_expression(path)}` ({what(culprit)}) in {head}"
    else:
        sub = "".join(f".{s.name}" if s.kind == "attr" else f"[{s.name}]" for s in path)
        where = f"`{sub}` ({what(culprit)}) in {root}"
    return f"{where} cannot be pickled: {hint(culprit)}"
