"""HTML (for Jupyter's rich display) and one-line text of zexec's objects.

Pure functions of plain values: the objects' ``_repr_html_`` / ``__repr__`` call them.
Every value that came from elsewhere (a server's log line, a requirement, a docstring) is
escaped: a cell's output must not become markup a remote party chose.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from typing import Any

_STYLE = ("border-collapse:collapse;margin:0.2em 0;font-size:0.9em;"
          "text-align:left")
_CELL = "padding:0.15em 0.8em 0.15em 0;vertical-align:top;text-align:left"
#: Colours of the server phases (a dot before the phase name).
_PHASE_COLOUR = {"ready": "#2e7d32", "failed": "#c62828", "terminated": "#757575",
                 "absent": "#757575"}
_BUSY = "#f9a825"  # pending, installing, starting


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(title: str, rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table under a bold title; ``rows`` values are HTML already."""
    body = "".join(
        f'<tr><th style="{_CELL}">{_e(k)}</th><td style="{_CELL}">{v}</td></tr>'
        for k, v in rows)
    return (f'<div class="zexec"><b>{title}</b>'
            f'<table style="{_STYLE}">{body}</table></div>')


def phase_html(phase: str) -> str:
    """A phase name with a coloured dot (green ready, amber on the way, red failed)."""
    colour = _PHASE_COLOUR.get(phase, _BUSY)
    return f'<span style="color:{colour}">&#9679;</span> {_e(phase)}'


def code(text: str) -> str:
    return f"<code>{_e(text)}</code>"


def _ago(since: Any) -> str:
    if not isinstance(since, int | float) or since <= 0:
        return ""
    seconds = max(0, int(time.time() - since))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def requirements_text(env: dict[str, Any] | None) -> str:
    """``python 3.11 + numpy, pandas`` (what a server runs), or ``""``."""
    if not isinstance(env, dict):
        return ""
    reqs = [str(r) for r in env.get("requirements") or ()]
    py = f"python {env.get('python')}" if env.get("python") else ""
    return " + ".join(p for p in (py, ", ".join(reqs)) if p)


def status_line(status: dict[str, Any] | None) -> str:
    """One line for a server's status: who, phase, since when, what it runs."""
    if not status:
        return "no server"
    who = status.get("user") or status.get("user_id") or "?"
    parts = [f"server of {who}: {status.get('phase', '?')}"]
    ago = _ago(status.get("since"))
    if ago:
        parts.append(f"since {ago}")
    runs = requirements_text(status.get("env"))
    if runs:
        parts.append(runs)
    if status.get("reason"):
        parts.append(f"({status['reason']})")
    return ", ".join(parts)


def resources_text(got: dict[str, Any]) -> str:
    """What a server got, in a few words: ``cpus 1, memory not bounded, ...``; then the
    orchestrator's note on what it does not enforce."""
    units = {"memory": " MiB"}
    parts = [f"{k} {got[k]:g}{units.get(k, '')}" if isinstance(got.get(k), int | float)
             else f"{k} not bounded" for k in ("cpus", "memory", "gpus", "workers")]
    note = got.get("note")
    return ", ".join(parts) + (f" ({note})" if note else "")


def status_html(status: dict[str, Any] | None, title: str = "zexec server") -> str:
    """A small table of a server's status (``Connection.status()`` / ``environment()``)."""
    if not status:
        return table(_e(title), [("phase", phase_html("absent")),
                                 ("next", "call <code>conn.environment([...])</code>")])
    rows = [("user", _e(status.get("user") or status.get("user_id") or "?")),
            ("phase", phase_html(str(status.get("phase", "?"))))]
    ago = _ago(status.get("since"))
    if ago:
        rows.append(("since", _e(ago)))
    env = status.get("env")
    if isinstance(env, dict):
        rows.append(("python", _e(env.get("python", "?"))))
        reqs = [str(r) for r in env.get("requirements") or ()]
        rows.append(("requirements", ", ".join(code(r) for r in reqs) or "none"))
        if env.get("digest"):
            rows.append(("environment", code(str(env["digest"])[:12])))
    got = status.get("resources")
    if isinstance(got, dict):
        rows.append(("resources", _e(resources_text(got))))
    if status.get("reason"):
        rows.append(("reason", _e(status["reason"])))
    tail = [str(line) for line in status.get("log_tail") or ()][-5:]
    if tail and status.get("phase") != "ready":
        rows.append(("log", f'<pre style="margin:0">{_e(chr(10).join(tail))}</pre>'))
    return table(_e(title), rows)


def connection_html(user: str, broker: str, encrypted: bool, deploy: str,
                    status: dict[str, Any] | None, error: str = "") -> str:
    """A connection: who, which broker (encrypted or not), the Deploy API, the server."""
    from zexec.apps.client.privacy import privacy

    lock = {"encrypted": "encrypted (TLS)",
            "loopback": "plain (loopback: never leaves this machine)"}.get(
                privacy(broker, encrypted), "not encrypted")
    rows = [("user", _e(user)), ("broker", f"{code(broker)} &middot; {_e(lock)}"),
            ("deploy API", code(deploy))]
    if error:
        rows.append(("server", f"unknown: {_e(error)}"))
    elif not status:
        rows.append(("server", f"{phase_html('absent')} &middot; call "
                               "<code>conn.environment([...])</code>"))
    else:
        runs = requirements_text(status.get("env"))
        rows.append(("server", phase_html(str(status.get("phase", "?")))
                     + (f" &middot; {_e(runs)}" if runs else "")))
    return table("zexec connection", rows)


def function_html(name: str, signature: str, doc: str, where: str, options: dict[str, Any],
                  client: str) -> str:
    """A remote function: its signature, docstring's first line, where it is defined
    and where and how it runs."""
    rows = []
    if doc:
        rows.append(("doc", _e(doc)))
    rows.append(("runs on", _e(client)))
    rows.extend((k, _e(v)) for k, v in options.items())
    if where:
        rows.append(("defined in", code(where)))
    return table(f"remote function {code(name + signature)}", rows)

