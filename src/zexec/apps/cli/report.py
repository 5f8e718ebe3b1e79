"""``zexec status`` and ``zexec logs``: what a running stack is doing.

Status combines three views: the components (their process alive, each answering its
health check; the IdP, the Deploy API and the EP API share the web process), the
broker's control ``STATUS`` (which users' servers are registered, their pid and Python),
and the Deploy API's ``GET /status`` asked with each development user's token (phase:
pending / installing / starting / ready / failed).

Logs: ``logs/broker.log`` and ``logs/web.log``; ``zexec logs deploy-api`` (or ``devidp``,
``ep-api``) shows the lines of web.log tagged with that app plus the untagged ones of
the process itself; ``zexec logs web`` shows all of it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, TextIO

from zexec.apps.cli import procs
from zexec.apps.cli.stack import (
    COMPONENTS,
    PROCESSES,
    WEB_APPS,
    StackError,
    StateDir,
    UsageError,
    endpoints,
    healthy,
)

#: Seconds each health check or status request of ``zexec status`` may take.
TIMEOUT = 10.0


def collect(d: StateDir) -> dict[str, Any] | None:
    """The status document (what ``zexec status --json`` prints); None without a stack."""
    stack = d.load()
    if stack is None:
        return None
    admin = d.admin.read_text().strip() if d.admin.exists() else ""
    comps: dict[str, Any] = {}
    for name, comp in endpoints(stack).items():
        if not procs.alive(comp["pid"], comp.get("start")):
            state = "down"
        else:
            # Generous: a busy machine must not make a working component look broken.
            state = "up" if healthy(name, comp, stack, admin, timeout=TIMEOUT) else "unhealthy"
        comps[name] = {
            "state": state,
            "pid": comp["pid"],
            "url": comp["url"],
            "process": comp["process"],
        }
    return {
        "state_dir": stack["state_dir"],
        # How users are kept apart (mode, description); absent: a stack of zexec before.
        "isolation": stack.get("isolation"),
        "components": comps,
        "servers": _servers(
            stack,
            admin,
            d.orchestrator,
            broker_up=comps.get("broker", {}).get("state") == "up",
            deploy_up=comps.get("deploy-api", {}).get("state") == "up",
        ),
    }


def _servers(
    stack: dict[str, Any], admin: str, orchestrator: Path, *, broker_up: bool, deploy_up: bool
) -> list[dict[str, Any]]:
    """One row per user with a server known to the Deploy API or the broker."""
    ids = stack.get("users", {})  # name -> user id (the IdP's ``sub``)
    names = {uid: user for user, uid in ids.items()}
    rows: dict[str, dict[str, Any]] = {}
    if deploy_up:
        import httpx

        base = stack["deploy_api_url"] + stack.get("deploy_api_prefix", "")
        for user, token in stack.get("tokens", {}).items():
            try:
                r = httpx.get(
                    f"{base}/status", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
                )
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                body = r.json()
                rows[body.get("user_id") or ids.get(user, user)] = {
                    "user": user,
                    "phase": body.get("phase"),
                    "reason": body.get("reason", ""),
                    "python": (body.get("env") or {}).get("python"),
                }
    if broker_up:
        from zexec.adapters.transport_zmq.control_client import broker_control

        reply = (
            broker_control(
                stack["broker_host"], stack["broker_control_port"], admin, timeout=TIMEOUT
            )
            or {}
        )
        for uid, entry in ((reply.get("status") or {}).get("servers") or {}).items():
            info = entry.get("info") or {}
            row = rows.setdefault(uid, {"user": names.get(uid, uid), "phase": None})
            row.update(
                registered=True,
                pid=info.get("pid"),
                workers=info.get("workers"),
                inflight=entry.get("inflight"),
            )
            row.setdefault("python", info.get("python"))
    # The pid the orchestrator recorded: the one to signal (a sandboxed server reports
    # its pid inside its own pid namespace to the broker).
    from zexec.adapters.orchestrator_local.records import Records

    recorded = {r["user_id"]: r for r in Records(orchestrator / "servers", create=False).load_all().values()
                if r.get("role") == "server" and "user_id" in r}
    for uid, row in rows.items():
        row["user_id"] = uid
        row.setdefault("registered", False)
        if uid in recorded:
            row["pid"] = recorded[uid]["pid"]
            row["uid"] = recorded[uid].get("uid")
        row.setdefault("pid", None)
    return sorted(rows.values(), key=lambda r: r["user"])


def status(d: StateDir, out: TextIO, as_json: bool = False) -> int:
    """Print the status; 0 when every component is up, 1 otherwise."""
    doc = collect(d)
    if doc is None:
        out.write(f"no zexec stack in {d.root} (start one with: zexec up --state-dir {d.root})\n")
        return 1
    if as_json:
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        out.write(f"zexec stack in {doc['state_dir']}\n")
        iso = doc.get("isolation") or {"mode": "unknown", "description": "not recorded"}
        out.write(f"  isolation   {iso['mode']}: {iso['description']}\n")
        for name, c in doc["components"].items():
            shared = "" if c["process"] == name else f", {c['process']} process"
            where = f"pid {c['pid']}{shared}"
            out.write(f"  {name:<11} {c['state']:<10} {c['url']}  ({where})\n")
        out.write("user servers:\n" if doc["servers"] else "user servers: none\n")
        for s in doc["servers"]:
            where = ", ".join(
                ([f"pid {s['pid']}"] if s["pid"] else [])
                + ([f"uid {s['uid']}"] if s.get("uid") is not None else [])
                + ([] if s["registered"] else ["not registered with the broker"])
            )
            phase = s["phase"] or "unknown to the Deploy API"
            extra = f" - {s['reason']}" if s.get("reason") else ""
            out.write(f"  {s['user']:<11} {phase:<10} python {s.get('python')}  ({where}){extra}\n")
    return 0 if all(c["state"] == "up" for c in doc["components"].values()) else 1


#: The start of a tagged log record (:data:`zexec.apps.runtime.TAGGED_LOG_FORMAT`);
#: lines that do not match continue the record before them (tracebacks).
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ \[([^\]]*)\] ")
#: Bytes of web.log read to find the last lines of one app's records.
WEB_TAIL_BYTES = 4 * 1024 * 1024


def log_path(d: StateDir, component: str) -> Path:
    """The log of a process (``broker``, ``web``) or component (an app of the web
    process: its lines are in web.log), or of a user's server (by user name or id)."""
    if component in WEB_APPS and not d.log(component).exists():
        return d.log("web")  # (the file of the app exists only for a four-process stack)
    if component in COMPONENTS or component in PROCESSES:
        return d.log(component)
    from zexec.adapters.orchestrator_local import server_log

    stack = d.load() or {}
    uid = stack.get("users", {}).get(component, component)
    path = server_log(d.orchestrator, uid)
    if not path.exists():
        users = ", ".join(stack.get("tokens", {})) or "none"
        names = ", ".join((*COMPONENTS, "web"))
        raise UsageError(
            f"no log for {component!r}: name a component ({names}) or a user "
            f"with a server (development users: {users})"
        )
    return path


def app_lines(path: Path, app: str, lines: int) -> str:
    """The last ``lines`` lines of web.log's records tagged ``[app]`` or ``[-]`` (the
    process itself), continuation lines included."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - WEB_TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    keep, mine = [], True
    for line in text.splitlines():
        m = _RECORD.match(line)
        if m:
            mine = m.group(1) in (app, "-")
        if mine:
            keep.append(line)
    return "\n".join(keep[-lines:])


def logs(d: StateDir, component: str | None, lines: int, out: TextIO) -> int:
    """Print the last ``lines`` lines of one log, or of every process's."""
    if component is not None:
        path = log_path(d, component)
        if component in WEB_APPS and path == d.log("web"):
            out.write(app_lines(path, component, lines) + "\n")
        else:
            out.write(procs.tail(path, lines) + "\n")
        return 0
    if not d.logs.is_dir():
        raise StackError(f"no logs in {d.root} (has `zexec up --state-dir {d.root}` run?)")
    for name in PROCESSES:
        out.write(f"==> {d.log(name)} <==\n{procs.tail(d.log(name), lines)}\n")
    return 0
