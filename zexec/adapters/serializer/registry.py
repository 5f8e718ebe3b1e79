"""Pick a serializer by name from what the installed plugins provide."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from zexec.core.errors import UnknownSerializerError
from zexec.core.ports import Serializer


class SerializerRegistry:
    def __init__(self, serializers: Iterable[Serializer]) -> None:
        self._by_name: dict[str, Serializer] = {}
        for s in serializers:
            self._by_name[s.name] = s  # later registrations win

    def get(self, name: str) -> Serializer:
        """The serializer called ``name``; an unknown name lists the installed ones."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownSerializerError(
                f"unknown serializer {name!r}; installed: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._by_name)


@lru_cache(maxsize=1)
def default_registry() -> SerializerRegistry:
    """The registry of every serializer the process's plugins provide."""
    from zexec.plugins import get_plugin_manager

    pm = get_plugin_manager()
    # pluggy calls the most recently registered plugin first; reverse so it wins.
    found = [s for group in reversed(pm.hook.zexec_serializers()) for s in group]
    return SerializerRegistry(found)
