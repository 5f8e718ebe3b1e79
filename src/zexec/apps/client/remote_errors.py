"""Turn a v1 ERROR event back into the exception the caller should see."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

from zexec.apps.client.remote_frames import remote_traceback
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


log = logging.getLogger("zexec.client")


def _with_remote_traceback(exc: BaseException, event: Event,
                           serializer: Serializer | None) -> BaseException:
    """``exc`` with the remote frames as its traceback (from the event's post-mortem),
    or, when there are none, the remote traceback's text as a note."""
    h = event.header
    text = str(h.get("traceback", "")).rstrip()
    pm = h.get("postmortem")
    tb = None
    if isinstance(pm, dict):
        at = h.get("extra_at")
        blobs = event.buffers[at:] if isinstance(at, int) and at >= 0 else ()
        try:
            tb = remote_traceback(pm, blobs, serializer)
        except Exception as failure:  # a malformed post-mortem: the text still serves
            log.debug("no remote frames: %r", failure)
    if tb is None:
        if text:
            exc.add_note(f"\nRemote traceback:\n{text}")
        return exc
    first = tb.tb_frame.f_code.co_name
    frames = "the cell's code" if first == "<module>" else f"the frames from {first!r} on"
    note = (f"(zexec: raised on your server; {frames} ran there. "
            "%debug or zexec.debug() opens them with their local variables.)")
    if pm.get("skipped"):
        note += f"\n({pm['skipped']} outer remote frames are left out.)"
    if pm.get("chained") and text:
        note += f"\n\nRemote traceback, with the exceptions it chains:\n{text}"
    exc.add_note(note)
    return exc.with_traceback(tb)


def _value_frames(event: Event) -> tuple[Any, ...]:
    """The frames of the event's value (the exception), without the extra ones."""
    at = event.header.get("extra_at")
    return event.buffers[:at] if isinstance(at, int) and at >= 0 else event.buffers


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
    here, otherwise as :class:`RemoteError` carrying the type name and traceback text.
    Either way its traceback continues into the remote frames (see
    :mod:`zexec.apps.client.remote_frames`), or, for a server that sent none, the remote
    traceback's text is a note. zexec's own failures map to their classes by code
    (``DEADLINE_EXCEEDED`` -> :class:`~zexec.core.errors.CallTimeout`, ...).
    """
    h = event.header
    code = str(h.get("code", "INTERNAL"))
    message = str(h.get("message", ""))
    tb = str(h.get("traceback", ""))
    if code != "REMOTE_EXCEPTION":
        cls = BY_CODE.get(code, ZexecError)
        err = cls(message or code)
        return _with_remote_traceback(err, event, serializer) if tb else err
    type_name = str(h.get("type", "Exception"))
    local = _local_type(type_name)
    buffers = _value_frames(event)
    if local is not None and buffers and serializer is not None:
        try:
            exc = serializer.loads(buffers)
        except SerializationError:
            exc = None
        if isinstance(exc, BaseException):
            if type(exc) is not local and type(exc).__qualname__ == local.__qualname__:
                # Pickled by value (a class from the caller's __main__): use the local one.
                try:
                    exc = local(*exc.args)
                except Exception:
                    exc = RemoteError(type_name, message, tb)
            return _with_remote_traceback(exc, event, serializer)
    if local is not None:
        try:
            return _with_remote_traceback(local(message), event, serializer)
        except Exception:
            pass
    return _with_remote_traceback(RemoteError(type_name, message, tb), event, serializer)


def unloadable_here(exc: SerializationError, what: str) -> SerializationError:
    """``exc``, or, when a module this Python lacks is why a result cannot be unpickled
    (the common case: numpy or pandas on the server, not in the notebook), an error that
    names the module and what to do."""
    cause = exc.__cause__
    if not isinstance(cause, ModuleNotFoundError) or not cause.name:
        return exc
    module = cause.name.partition(".")[0]
    err = SerializationError(
        f"{what} of the remote call is an object of the module {module!r}, which this "
        f"Python ({sys.executable}) cannot import: install {module!r} here as on the "
        f"server, or return plain Python values (for numpy: x.tolist(), float(x))")
    err.__cause__ = cause
    return err
