"""The built-in serializers, registered as an ordinary ``zexec`` plugin."""

from __future__ import annotations

from zexec.adapters.serializer.pickling import CloudpickleSerializer, DillSerializer
from zexec.hookspecs import hookimpl


@hookimpl
def zexec_serializers():
    return [DillSerializer(), CloudpickleSerializer()]
