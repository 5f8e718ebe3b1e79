"""zexec's plugin system (pluggy): hook specifications and the one plugin manager.

A site extends zexec without forking by shipping a package with an entry point in the
``zexec`` group whose module implements some of the hooks below with ``@hookimpl``.
zexec's own built-in adapters register through the very same entry points, so a site
plugin is never a second-class citizen.
"""

from __future__ import annotations

from functools import lru_cache

import pluggy

# A site plugin imports its marker from here, as the documentation shows.
from zexec.hookspecs import PROJECT, ZexecSpec, hookimpl, hookspec  # noqa: F401


def _load_builtins(pm: pluggy.PluginManager) -> None:
    # When zexec runs from a source tree that was not pip-installed, its own entry
    # points are invisible; register the built-ins directly so it still works.
    from zexec.adapters.serializer import plugin as serializers

    if not pm.is_registered(serializers):
        pm.register(serializers, name="serializers")


@lru_cache(maxsize=1)
def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager: hookspecs added, entry points loaded, built-ins
    registered. Cached: plugins are discovered once per process."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(ZexecSpec)
    pm.load_setuptools_entrypoints(PROJECT)
    _load_builtins(pm)
    return pm
