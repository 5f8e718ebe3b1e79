"""zexec's plugin manager (pluggy): built-ins by name, then the sites' entry points.

A site extends zexec without forking by shipping a package with an entry point in the
``zexec`` group whose module implements some hooks of :mod:`zexec.hookspecs` with
``@hookimpl`` (importable from here too). zexec's own adapters are plugins of the same
kind, registered by the names in :data:`BUILTINS`.

The rule on built-ins: a site plugin *adds*; it never replaces what zexec ships.

* Built-ins are registered first, by name; an entry point with one of these names is
  skipped (pluggy does not register a name twice), so the names in :data:`BUILTINS` are
  reserved.
* A serializer a site plugin provides under a built-in's name (``dill``,
  ``cloudpickle``) is ignored: the client and the server must agree on what a name
  means, and the built-in is what every installation has
  (:class:`zexec.adapters.serializer.registry.SerializerRegistry` applies it).
* Hooks that choose (``zexec_server_image``) ask the last registered plugin first, so a
  site's answer comes before any built-in one.

The manager checks every registered plugin against the specs (``check_pending``): a
``@hookimpl`` whose name no spec has (a typo such as ``zexec_serialiser``) fails at
start-up rather than never being called. A plugin that implements a hook of a newer zexec
as well marks it ``@hookimpl(optionalhook=True)``, so older versions load it.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

import pluggy

from zexec.hookspecs import PROJECT, ZexecSpec, hookimpl, hookspec  # noqa: F401

#: zexec's own plugins: the name each registers under, and its module.
BUILTINS: dict[str, str] = {
    "serializers": "zexec.adapters.serializer.plugin",
}


def make_plugin_manager(*, entry_points: bool = True) -> pluggy.PluginManager:
    """A new manager: hookspecs added, built-ins registered, then (with
    ``entry_points``) the installed plugins, all checked against the specs."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(ZexecSpec)
    for name, module in BUILTINS.items():
        pm.register(importlib.import_module(module), name=name)
    if entry_points:
        pm.load_setuptools_entrypoints(PROJECT)
    pm.check_pending()
    return pm


@lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager. Cached: plugins are discovered once per process
    (scanning every distribution's entry points is costly)."""
    return make_plugin_manager()
