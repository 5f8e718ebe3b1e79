"""An object of a module that exists only while it is pickled: what a value of numpy
looks like to a Python without numpy."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager

NAME = "zexec_absent_mod"


@contextmanager
def module_gone_after() -> Iterator[type]:
    """A class of module :data:`NAME`, importable inside the ``with`` only; pickles made
    there refer to the module by name, as numpy's types are pickled."""
    mod = types.ModuleType(NAME)

    class Thing:
        pass

    Thing.__module__, Thing.__qualname__ = NAME, "Thing"
    mod.Thing = Thing  # type: ignore[attr-defined]
    sys.modules[NAME] = mod
    try:
        yield Thing
    finally:
        del sys.modules[NAME]
