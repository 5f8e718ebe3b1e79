"""Serialized functions, reused while nothing they capture can have changed.

cloudpickle and dill pickle a function from ``__main__`` (a notebook cell, a script) *by
value*: its code plus the globals, defaults and closure cells it uses, as they are at
that moment. Pickling it again for every call is most of a quick call's cost on the
client, so the frame is reused, but only when that is provably the same as pickling
again: every captured value is immutable (numbers, strings, bytes, None, and tuples or
frozensets of those) or pickled by reference (modules, and classes or functions that
live in an importable module), and the key holds the identity of each, so rebinding a
global, a default or a cell gives a new frame. A function that captures anything else
(a list, a dict, an array, another ``__main__`` function or class, its own ``__dict__``)
is pickled every time, exactly as without the cache.

The local modules a call needs travel with the function (see
:mod:`zexec.adapters.serializer.localmods`): the frame is then the pickle of a bundle
that installs them on the server first, and the key holds their sources' version.
"""

from __future__ import annotations

import types
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from zexec.adapters.serializer import localmods
from zexec.core.ports import Serializer

_IMMUTABLE = (int, float, complex, bool, str, bytes, type(None), type(Ellipsis), range)
_BY_REFERENCE = (types.ModuleType, types.BuiltinFunctionType)


def _stable(value: Any, depth: int = 0) -> bool:
    """Whether pickling ``value`` gives the same bytes as long as it is the same object."""
    if isinstance(value, _IMMUTABLE) or isinstance(value, _BY_REFERENCE):
        return True
    if isinstance(value, tuple | frozenset):
        return depth < 4 and all(_stable(v, depth + 1) for v in value)
    if isinstance(value, type | types.FunctionType):
        # Pickled by reference only when importable from a real module that nobody
        # asked cloudpickle to pickle by value.
        module = getattr(value, "__module__", None) or "__main__"
        return module != "__main__" and "<locals>" not in value.__qualname__ \
            and not _by_value(module)
    return False


def _by_value(module: str) -> bool:
    """Whether ``module`` (or a package it is in) is registered with cloudpickle's
    ``register_pickle_by_value``."""
    import cloudpickle

    registered = cloudpickle.list_registry_pickle_by_value()
    parts = module.split(".")
    return any(".".join(parts[:i]) in registered for i in range(1, len(parts) + 1))


def _names(code: types.CodeType) -> set[str]:
    """Global names ``code`` (and the code nested in it) may look up."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def captured(fn: Any) -> list[Any] | None:
    """What pickling ``fn`` by value takes besides its code (defaults, closure cells, the
    globals it names), or None if some of it could change without being rebound."""
    if not isinstance(fn, types.FunctionType) or fn.__dict__:
        return None
    values: list[Any] = [fn.__defaults__ or (), tuple((fn.__kwdefaults__ or {}).items())]
    try:
        values += [cell.cell_contents for cell in fn.__closure__ or ()]
    except ValueError:  # an empty cell (a name assigned later)
        return None
    fn_globals = fn.__globals__
    values += [fn_globals[n] for n in sorted(_names(fn.__code__)) if n in fn_globals]
    return values if all(_stable(v) for v in values) else None


class FunctionFrames:
    """The serialized-function frame of each (function, serializer), cached when
    :func:`captured` allows it. ``hits`` counts reuses (state, for tests)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.hits = 0
        self._frames: OrderedDict[Hashable, tuple[Any, list[Any]]] = OrderedDict()

    def frame(self, fn: Callable, serializer: Serializer, modules: tuple[Any, ...] = ()) -> Any:
        """The frame of ``fn``, with the local modules it needs and ``modules``."""
        if serializer.name == "cloudpickle":
            localmods.register_local_modules()
        shipped = localmods.payload(localmods.roots_for(fn, serializer.name, modules))
        obj = fn if shipped is None else localmods.Bundle(fn, shipped)
        values = captured(fn)
        if values is None:
            return serializer.dumps(obj, out_of_band=False)[0]
        # Identities, not values (1 == 1.0 == True must not share a frame); the entry
        # keeps the values alive, so no other object can take one of their ids.
        key = (serializer.name, fn, fn.__code__, fn.__name__, fn.__qualname__, fn.__module__,
               tuple(id(v) for v in values), id(shipped))
        values.append(shipped)
        found = self._frames.get(key)
        if found is not None:
            self.hits += 1
            self._frames.move_to_end(key)
            return found[0]
        frame = serializer.dumps(obj, out_of_band=False)[0]
        self._frames[key] = (frame, values)
        if len(self._frames) > self.size:
            self._frames.popitem(last=False)
        return frame
