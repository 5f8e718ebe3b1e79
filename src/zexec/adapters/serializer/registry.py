"""Pick a serializer by name from what the installed plugins provide."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache

from zexec.core.errors import UnknownSerializerError
from zexec.core.ports import Serializer


class SerializerRegistry:
    """Serializers by name: the built-ins at once, plugins' when first needed.

    Looking for installed plugins means scanning every distribution's entry points
    (60 ms here, in every client and every worker process); the built-ins (dill,
    cloudpickle) serve almost every call, so ``discover`` runs only for a name they do
    not have, or when the full list is asked for. A plugin adds names; it cannot
    replace a built-in one (both ends of a call must agree on what a name means): the
    rule on built-ins of :mod:`zexec.plugins`.
    """

    def __init__(self, serializers: Iterable[Serializer],
                 discover: Callable[[], Iterable[Serializer]] | None = None) -> None:
        self._by_name: dict[str, Serializer] = {}
        for s in serializers:
            self._by_name[s.name] = s  # later registrations win
        self._discover = discover

    def _add_discovered(self) -> None:
        discover, self._discover = self._discover, None
        if discover is None:
            return
        found: dict[str, Serializer] = {}
        for s in discover():
            found[s.name] = s  # later registrations win among plugins
        for name, s in found.items():
            self._by_name.setdefault(name, s)

    def get(self, name: str) -> Serializer:
        """The serializer called ``name``; an unknown name lists the installed ones."""
        found = self._by_name.get(name)
        if found is None:
            self._add_discovered()
            found = self._by_name.get(name)
        if found is None:
            raise UnknownSerializerError(
                f"unknown serializer {name!r}; installed: {', '.join(self.names())}"
            )
        return found

    def names(self) -> list[str]:
        self._add_discovered()
        return sorted(self._by_name)


def plugin_serializers(pm=None) -> list[Serializer]:
    """Every serializer the plugins of ``pm`` (default: the process's, entry point group
    ``zexec``) provide, the last registered plugin's last."""
    if pm is None:
        from zexec.plugins import get_plugin_manager

        pm = get_plugin_manager()
    # pluggy calls the most recently registered plugin first; reverse so it wins.
    return [s for group in reversed(pm.hook.zexec_serializers()) for s in group]


@lru_cache(maxsize=1)
def default_registry() -> SerializerRegistry:
    """The registry of every serializer the process's plugins provide."""
    from zexec.adapters.serializer import plugin as builtins

    return SerializerRegistry(builtins.zexec_serializers(), discover=plugin_serializers)
