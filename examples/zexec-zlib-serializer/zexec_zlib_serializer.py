"""An example zexec plugin: the serializer ``zlib``, cloudpickle compressed with zlib.

Worth it for calls whose arguments or results compress well (text, sparse arrays) over
a slow link. Install this package on the client *and* in the server's environment
(``conn.environment([..., "zexec-zlib-serializer"])``), then
``@zexec.remote(serializer="zlib")``.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Sequence
from typing import Any

import cloudpickle

from zexec.core.errors import SerializationError
from zexec.plugins import hookimpl


class ZlibSerializer:
    """Satisfies :class:`zexec.core.ports.Serializer`: one compressed frame per object."""

    name = "zlib"

    def __init__(self, level: int = 6) -> None:
        self.level = level

    def dumps(self, obj: Any, out_of_band: bool = True) -> list[Any]:
        # One frame whatever out_of_band says: out-of-band buffers would bypass the
        # compression that is the point of this serializer.
        try:
            return [zlib.compress(cloudpickle.dumps(obj, protocol=5), self.level)]
        except Exception as exc:
            raise SerializationError(f"cannot serialize {type(obj).__name__}: {exc}") from exc

    def loads(self, frames: Sequence[Any]) -> Any:
        try:
            return pickle.loads(zlib.decompress(memoryview(frames[0])))
        except Exception as exc:
            raise SerializationError(f"cannot deserialize: {exc}") from exc


@hookimpl
def zexec_serializers() -> list[Any]:
    return [ZlibSerializer()]
