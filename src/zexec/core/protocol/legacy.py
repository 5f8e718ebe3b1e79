"""The legacy (scidx-rexec 0.1.0) reply stream, built in this one place: its event
dicts, their payload frames, the translation of a worker's events into it, and the
events that end a call in either protocol.

A legacy client reads one ``dill`` payload per message: a dict with ``type`` (``START``,
``DATA``, ``END``, ``ERROR``), ``sequence`` and the type's fields.
"""

from __future__ import annotations

import pickle
from typing import Any

from zexec.core.model import EV_CANCELLED, EV_ERROR, EV_RETURN, EV_YIELD
from zexec.core.protocol.client import v1_error, v1_event

#: Kinds of a worker's events that exist only in the legacy stream.
START = "start"
END = "end"


def legacy_payload(obj: Any) -> bytes:
    """A legacy reply payload. scidx-rexec reads it with ``dill.loads``; plain pickle of
    builtin objects (str, dict) is readable by dill, so the broker needs no dill."""
    return pickle.dumps(obj, protocol=4)


def legacy_event(kind: str, seq: int, **fields: Any) -> dict[str, Any]:
    """A legacy stream event dict (``START``, ``DATA``, ``END``, ``ERROR``)."""
    return {"type": kind, "sequence": seq, **fields}


def legacy_output(seq: int, channel: str, text: str) -> dict[str, Any]:
    """One segment of captured output (``channel``: stdout or stderr)."""
    return legacy_event("DATA", seq, channel=channel, data=text)


def legacy_event_for(kind: str, seq: int, fields: dict[str, Any], value: Any
                     ) -> dict[str, Any]:
    """The legacy event for a worker's event ``kind`` (an ``EV_*`` kind, :data:`START`,
    :data:`END`, or output with ``channel`` and ``data`` fields); its ``value`` is a
    return or yielded value."""
    if kind == EV_RETURN:
        return legacy_event("DATA", seq, channel="return", data=value)
    if kind == EV_YIELD:
        return legacy_event("DATA", seq, channel="yield", data=value)
    if kind == EV_ERROR:
        return legacy_event("ERROR", seq, message=fields["message"],
                            details=fields.get("traceback", ""))
    if kind == START:
        return legacy_event("START", seq, function=fields.get("function", ""))
    if kind == END:
        return legacy_event("END", seq)
    return legacy_output(seq, fields["channel"], fields["data"])


# --------------------------------------------------------------------------- final events
# What a broker or server that is not running the call sends to end it, in the call's
# own protocol: both end calls (cancel, deadline, worker or server gone).


def final_error(call_key: bytes, legacy: bool, code: str, message: str, seq: int = 0,
                type_name: str = "") -> list[Any]:
    """Client-bound frames of an error that ends a call (legacy: an ``ERROR`` event)."""
    if legacy:
        return [legacy_payload(legacy_event("ERROR", seq, message=message, details=""))]
    return v1_error(call_key, code, message, seq, type_name)


def final_cancelled(call_key: bytes, legacy: bool, reason: str, seq: int = 0) -> list[Any]:
    """Client-bound frames of the event that ends a cancelled call."""
    if legacy:
        return [legacy_payload(legacy_event("END", seq, cancelled=True, reason=reason))]
    return v1_event(call_key, EV_CANCELLED, seq, {"reason": reason})
