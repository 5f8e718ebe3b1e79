"""The plugin manager and its rule on built-ins, with site plugins installed for real:
a distribution's ``.dist-info`` with an ``entry_points.txt`` on ``sys.path``."""

from __future__ import annotations

import textwrap

import pluggy
import pytest

from zexec.adapters.serializer import plugin as builtin_serializers
from zexec.adapters.serializer.pickling import DillSerializer
from zexec.adapters.serializer.registry import SerializerRegistry, plugin_serializers
from zexec.plugins import BUILTINS, make_plugin_manager

SITE = '''
from zexec.plugins import hookimpl


class Named:
    def __init__(self, name):
        self.name = name

    def dumps(self, obj):
        return [repr(obj).encode()]

    def loads(self, frames):
        return bytes(frames[0]).decode()


@hookimpl
def zexec_serializers():
    return [Named("dill"), Named("sitejson")]
'''


def install(tmp_path, monkeypatch, module: str, source: str, entry_name: str) -> None:
    """Install a plugin distribution whose ``zexec`` entry point ``entry_name`` is
    ``module``."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    dist = tmp_path / f"{module}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[zexec]\n{entry_name} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_built_ins_are_registered_by_name():
    pm = make_plugin_manager(entry_points=False)
    assert set(BUILTINS) <= {name for name, _ in pm.list_name_plugin()}
    assert pm.get_plugin("serializers") is builtin_serializers


def test_a_site_plugin_adds_serializers_but_never_replaces_a_built_in(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "site_ser_plugin", SITE, "site")
    pm = make_plugin_manager()
    assert pm.get_plugin("site") is not None
    reg = SerializerRegistry(builtin_serializers.zexec_serializers(),
                             discover=lambda: plugin_serializers(pm))
    assert reg.get("sitejson").dumps(1) == [b"1"]
    assert isinstance(reg.get("dill"), DillSerializer)  # the built-in, not the site's
    assert reg.names() == ["cloudpickle", "dill", "sitejson"]


def test_a_built_in_name_is_reserved(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "site_usurper", SITE, "serializers")
    pm = make_plugin_manager()
    assert pm.get_plugin("serializers") is builtin_serializers
    assert "sitejson" not in {s.name for s in plugin_serializers(pm)}


def test_a_misspelt_hook_fails_at_start_up(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "site_typo", """
        from zexec.plugins import hookimpl

        @hookimpl
        def zexec_serialisers():
            return []
    """, "typo")
    with pytest.raises(pluggy.PluginValidationError, match="zexec_serialisers"):
        make_plugin_manager()


def test_a_choosing_hook_asks_the_site_first(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "site_image", """
        from zexec.plugins import hookimpl

        @hookimpl
        def zexec_server_image(env):
            return "registry.example/site:" + env.python
    """, "image")
    from zexec.core.model import EnvSpec

    pm = make_plugin_manager()
    assert pm.hook.zexec_server_image(env=EnvSpec("3.12", (), "d")) == \
        "registry.example/site:3.12"


def test_an_optional_hook_of_a_newer_zexec_is_accepted(tmp_path, monkeypatch):
    install(tmp_path, monkeypatch, "site_newer", """
        from zexec.plugins import hookimpl

        @hookimpl(optionalhook=True)
        def zexec_hook_of_the_future():
            return 1
    """, "newer")
    assert make_plugin_manager().get_plugin("newer") is not None
