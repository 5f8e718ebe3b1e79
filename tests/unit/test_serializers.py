"""The serializer registry: built-ins at once, plugins' on demand, clear errors."""

from __future__ import annotations

import pytest

from zexec.adapters.serializer import CloudpickleSerializer, SerializerRegistry
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
