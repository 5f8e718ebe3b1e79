"""A user's server status as the SDK returns it: the Deploy API's JSON object, shown as
one line (``repr``) and, in Jupyter, as a small table."""

from __future__ import annotations

from typing import Any

from zexec.notebook.html import status_html, status_line


class Status(dict):
    """The status of your server: a ``dict`` with ``phase`` (``pending``,
    ``installing``, ``starting``, ``ready``, ``failed``, ``terminated``), ``reason``,
    ``log_tail``, ``since``, ``user`` and ``env`` (``python``, ``requirements``,
    ``digest``), as ``GET /status`` of the Deploy API answers. Its ``repr`` is one line;
    a notebook shows it as a table."""

    def __repr__(self) -> str:
        return f"<zexec.Status {status_line(self)}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        return status_html(self)
