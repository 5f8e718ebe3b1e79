"""The client's cache of serialized functions: reused only while nothing a function
captures by value can have changed; the frame always unpickles to the current state."""

from __future__ import annotations

import math

import pytest

from zexec.adapters.serializer import default_registry
from zexec.apps.client.fncache import FunctionFrames

SERIALIZERS = ["cloudpickle", "dill"]


def run(frame: bytes, ser, *args):
    return ser.loads([frame])(*args)


def make(source: str, **env):
    """A function defined as in a notebook cell: its module is ``__main__``."""
    ns = {"__name__": "__main__", **env}
    exec(source, ns)
    return ns["f"], ns


@pytest.fixture(params=SERIALIZERS)
def ser(request):
    return default_registry().get(request.param)


def test_a_function_of_constants_and_modules_is_serialized_once(ser):
    f, _ = make("def f(x, k=2):\n    return math.floor(x) * k + LIMIT", math=math, LIMIT=10)
    frames = FunctionFrames()
    first = frames.frame(f, ser)
    assert frames.frame(f, ser) is first and frames.hits == 1
    assert run(first, ser, 3.7) == 16


def test_rebinding_a_captured_global_gives_a_new_frame(ser):
    f, ns = make("def f():\n    return LIMIT", LIMIT=10)
    frames = FunctionFrames()
    assert run(frames.frame(f, ser), ser) == 10
    ns["LIMIT"] = 11
    assert run(frames.frame(f, ser), ser) == 11 and frames.hits == 0


def test_a_mutable_global_is_pickled_every_time(ser):
    f, ns = make("def f():\n    return CONFIG['n']", CONFIG={"n": 1})
    frames = FunctionFrames()
    assert run(frames.frame(f, ser), ser) == 1
    ns["CONFIG"]["n"] = 2  # mutated in place: same object, new content
    assert run(frames.frame(f, ser), ser) == 2 and frames.hits == 0


def test_mutable_defaults_closures_and_attributes_are_not_cached(ser):
    frames = FunctionFrames()
    f, _ = make("def f(acc=[]):\n    return len(acc)")
    g_items = [1]

    def g():
        return len(g_items)

    h, _ = make("def f():\n    return 1")
    h.note = "an attribute"
    for fn in (f, g, h):
        frames.frame(fn, ser)
        frames.frame(fn, ser)
    assert frames.hits == 0


def test_a_closure_over_constants_is_cached_and_a_new_closure_is_not_mixed_up(ser):
    def make_adder(n):
        return lambda x: x + n

    frames = FunctionFrames()
    add1, add2 = make_adder(1), make_adder(2)
    assert run(frames.frame(add1, ser), ser, 1) == 2
    assert run(frames.frame(add2, ser), ser, 1) == 3
    assert run(frames.frame(add1, ser), ser, 1) == 2 and frames.hits == 1


def test_equal_but_different_values_do_not_share_a_frame(ser):
    f, ns = make("def f():\n    return type(X).__name__", X=1)
    frames = FunctionFrames()
    assert run(frames.frame(f, ser), ser) == "int"
    ns["X"] = True  # == 1, hashes like 1, but pickles differently
    assert run(frames.frame(f, ser), ser) == "bool"


def test_a_global_main_helper_function_is_not_cached(ser):
    f, ns = make("def helper():\n    return 1\n\ndef f():\n    return helper()")
    frames = FunctionFrames()
    frames.frame(f, ser)
    frames.frame(f, ser)
    assert frames.hits == 0
