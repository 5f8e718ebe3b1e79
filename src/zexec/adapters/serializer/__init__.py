"""Serializers (dill, cloudpickle) and the registry that picks one by name."""

from zexec.adapters.serializer.pickling import CloudpickleSerializer, DillSerializer
from zexec.adapters.serializer.registry import SerializerRegistry, default_registry

__all__ = ["CloudpickleSerializer", "DillSerializer", "SerializerRegistry", "default_registry"]
