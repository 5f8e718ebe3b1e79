"""Turn a v1 ERROR event back into the exception the caller should see."""

from __future__ import annotations

import importlib
from typing import Any

from zexec.core.errors import BY_CODE, RemoteError, SerializationError, ZexecError
from zexec.core.model import Event
from zexec.core.ports import Serializer


def _local_type(qualname: str) -> type[BaseException] | None:
    """The exception class called ``qualname`` (``module.Name``) if importable here."""
    module, _, name = qualname.rpartition(".")
    try:
        obj: Any = importlib.import_module(module or "builtins")
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError):
        return None
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return obj
    return None


def _with_remote_traceback(exc: BaseException, tb: str) -> BaseException:
    if tb:
        exc.add_note(f"\nRemote traceback:\n{tb.rstrip()}")
    return exc


def exception_from_event(event: Event, serializer: Serializer | None) -> BaseException:
    """The exception for an ERROR event (see :func:`_exception`), with a hint when the
    server missed a module."""
    exc = _exception(event, serializer)
    if isinstance(exc, ModuleNotFoundError | SerializationError | RemoteError):
        from zexec.adapters.serializer.localmods import missing_module_hint

        hint = missing_module_hint(str(event.header.get("message", "")))
        if hint:
            exc.add_note(hint)
    return exc


def _exception(event: Event, serializer: Serializer | None) -> BaseException:
    """The exception for an ERROR event.

    A remote exception is re-raised as its original type when that type is importable
    here (the remote traceback attached as a note); otherwise as :class:`RemoteError`
    carrying the type name and traceback. zexec's own failures map to their classes by
    code (``DEADLINE_EXCEEDED`` -> :class:`~zexec.core.errors.CallTimeout`, ...).
    """
    h = event.header
    code = str(h.get("code", "INTERNAL"))
    message = str(h.get("message", ""))
    tb = str(h.get("traceback", ""))
    if code != "REMOTE_EXCEPTION":
        cls = BY_CODE.get(code, ZexecError)
        return cls(message or code)
    type_name = str(h.get("type", "Exception"))
    local = _local_type(type_name)
    if local is not None and event.buffers and serializer is not None:
        try:
            exc = serializer.loads(event.buffers)
        except SerializationError:
            exc = None
        if isinstance(exc, BaseException):
            if type(exc) is not local and type(exc).__qualname__ == local.__qualname__:
                # Pickled by value (a class from the caller's __main__): use the local one.
                try:
                    exc = local(*exc.args)
                except Exception:
                    return RemoteError(type_name, message, tb)
            return _with_remote_traceback(exc, tb)
    if local is not None:
        try:
            return _with_remote_traceback(local(message), tb)
        except Exception:
            pass
    return RemoteError(type_name, message, tb)
