"""The example plugin package in examples/zexec-zlib-serializer: its entry point, and its
serializer found through the plugin manager, carrying a call's frames both ways."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from zexec.adapters.serializer import plugin as builtins
from zexec.adapters.serializer.registry import SerializerRegistry, plugin_serializers
from zexec.core.errors import SerializationError
from zexec.plugins import make_plugin_manager

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "zexec-zlib-serializer"


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(PACKAGE))
    import zexec_zlib_serializer

    return zexec_zlib_serializer


def test_its_entry_point_names_the_module_in_zexec_s_group():
    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["zexec"] == {
        "zlib-serializer": "zexec_zlib_serializer"}


def test_the_manager_finds_its_serializer_beside_the_built_ins(example):
    pm = make_plugin_manager(entry_points=False)
    pm.register(example, name="zlib-serializer")  # what its entry point does when installed
    pm.check_pending()
    reg = SerializerRegistry(builtins.zexec_serializers(), discover=lambda: plugin_serializers(pm))
    assert reg.names() == ["cloudpickle", "dill", "zlib"]
    ser = reg.get("zlib")

    def shout(text, times=1):
        return text.upper() * times

    fn = ser.loads(ser.dumps(shout))
    args, kwargs = ser.loads(ser.dumps((("ab " * 1000,), {"times": 2})))
    assert fn(*args, **kwargs) == "AB " * 2000
    assert len(ser.dumps("ab " * 1000)[0]) < 100  # it compresses
    with pytest.raises(SerializationError):
        ser.loads([b"not zlib"])
