"""The serializer registry: built-ins at once, plugins' on demand, clear errors; plain
values through the standard pickler."""

from __future__ import annotations

import enum
import pickle

import pytest

from zexec.adapters.serializer import CloudpickleSerializer, SerializerRegistry, default_registry
from zexec.adapters.serializer.pickling import PLAIN_MAX_VALUES, is_plain
from zexec.adapters.serializer.registry import plugin_serializers
from zexec.core.errors import UnknownSerializerError


class Reversing:
    """A third-party serializer as a plugin would provide it."""

    name = "reversing"

    def dumps(self, obj, out_of_band=True):
        return [repr(obj).encode()[::-1]]

    def loads(self, frames):
        import ast

        return ast.literal_eval(bytes(frames[0])[::-1].decode())


class Discovery:
    """A recording stand-in for the entry point scan."""

    def __init__(self, found):
        self.found = found
        self.runs = 0

    def __call__(self):
        self.runs += 1
        return self.found


def test_built_in_names_need_no_plugin_scan():
    scan = Discovery([Reversing()])
    reg = SerializerRegistry([CloudpickleSerializer()], discover=scan)
    assert reg.get("cloudpickle").name == "cloudpickle"
    assert scan.runs == 0


def test_a_plugin_name_is_found_by_one_scan():
    scan = Discovery([Reversing()])
    reg = SerializerRegistry([CloudpickleSerializer()], discover=scan)
    ser = reg.get("reversing")
    assert ser.loads(ser.dumps({"a": 1})) == {"a": 1}
    reg.get("reversing")
    assert scan.runs == 1 and reg.names() == ["cloudpickle", "reversing"]


def test_a_plugin_cannot_replace_a_built_in():
    impostor = Reversing()
    impostor.name = "cloudpickle"
    reg = SerializerRegistry([CloudpickleSerializer()], discover=Discovery([impostor]))
    reg.names()  # scanned
    assert isinstance(reg.get("cloudpickle"), CloudpickleSerializer)


def test_an_unknown_name_lists_every_installed_one():
    reg = SerializerRegistry([CloudpickleSerializer()], discover=Discovery([Reversing()]))
    with pytest.raises(UnknownSerializerError, match="installed: cloudpickle, reversing"):
        reg.get("nope")


def test_the_built_ins_come_through_the_plugin_hook_too():
    assert {s.name for s in plugin_serializers()} >= {"dill", "cloudpickle"}


# ---------------------------------------------------------------- plain values

class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize("value", [
    ((5,), {}), None, 1.5, "text", b"\x00" * 100_000, (True, None, 3j),
    {"a": [1.0, 2.0, "x"], 2: frozenset({1, 2}), (1, 2): {"nested": (None,)}},
])
def test_plain_values_go_through_the_standard_pickler_and_back(value):
    assert is_plain(value)
    for name in ("cloudpickle", "dill"):
        ser = default_registry().get(name)
        frames = ser.dumps(value)
        assert len(frames) == 1  # no out-of-band buffer: bytes stay in-band, as before
        assert frames[0] == pickle.dumps(value, protocol=5)
        assert ser.loads(frames) == value


def test_subclasses_objects_and_big_values_are_not_plain():
    assert not is_plain(Colour.RED)  # an IntEnum of __main__ must go by value
    assert not is_plain(((Colour.RED,), {}))
    assert not is_plain([object()])
    assert not is_plain(bytearray(b"x"))  # may go out-of-band
    assert not is_plain(list(range(PLAIN_MAX_VALUES)))  # the list itself counts too
    assert is_plain(list(range(PLAIN_MAX_VALUES - 1)))
    loop: list = []
    loop.append(loop)
    assert not is_plain(loop)  # a cycle runs out of budget, never loops


def test_a_non_plain_value_still_goes_through_its_family():
    ser = default_registry().get("cloudpickle")
    frames = ser.dumps(((Colour.RED, lambda: 1), {}))
    (colour, fn), _ = ser.loads(frames)
    assert colour == 1 and fn() == 1
