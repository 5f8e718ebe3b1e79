"""``zexec up`` / ``zexec down``: the whole stack on this machine, as background processes.

Two processes: the broker (``zexec broker``) and the web process (``zexec web``), which
serves the development IdP, the Deploy API (with the local orchestrator) and the EP API,
each on its own port, from one interpreter (one FastAPI import instead of three: on a
small machine that is most of the start-up time). The users' servers are processes of
their own, started by the Deploy API.

Layout of the state directory ``DIR`` (every secret file mode 0600):

* ``stack.json``: URLs, ports, tokens and the processes' ``(pid, start)`` under
  ``components`` (``broker``; ``web`` with its ``apps``: URL and health check of each);
  written as soon as the processes exist (so ``down`` can clean up an interrupted ``up``)
  and again with ``"ready": true`` once every app answers;
* ``tokens.json``: the development IdP's token file (users ``alice`` and ``bob``);
* ``server_secret`` (broker <-> servers credentials), ``admin_token`` (broker control);
* ``logs/broker.log``, ``logs/web.log`` (each line tagged ``[devidp]``, ``[deploy-api]``
  or ``[ep-api]``); ``orchestrator/``: the local orchestrator's environments, server
  logs (``orchestrator/logs/``) and ready files.

Secrets and tokens are reused from an earlier ``up`` of the same directory, so tokens
pasted into a notebook keep working across restarts. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from zexec.adapters.hugepages import with_hugepages
from zexec.apps import web
from zexec.apps.cli import procs
from zexec.apps.cli.banner import down_command, show
from zexec.apps.cli.state import (
    StackError,
    StateDir,
    UsageError,
    curve_key_file,
    dev_tokens,
    save,
    secret_file,
)

__all__ = ["StackError", "StateDir", "UsageError", "down", "up"]

HOST = "127.0.0.1"
#: The stack's parts as users name them (``zexec status`` rows, ``zexec logs NAME``).
COMPONENTS = ("devidp", "broker", "deploy-api", "ep-api")
#: The processes, in start order; ``down`` stops the web process first (its Deploy API
#: stops the users' servers while the broker still runs), then the broker.
PROCESSES = ("broker", "web")
#: The apps the web process serves.
WEB_APPS = web.APPS
#: Seconds between two rounds of health checks while ``up`` waits.
POLL = 0.05
PORT_NAMES = ("auth", "broker", "broker_secure", "broker_backend", "broker_control", "deploy",
              "ep")
PREFIX = "/rexec"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def child_env(**extra: str) -> dict[str, str]:
    """This environment without ``ZEXEC_*`` (a stray setting of the user's must not
    reconfigure the stack), with huge pages for large buffers (the broker relays
    payloads; see :mod:`zexec.adapters.hugepages`), plus ``extra``."""
    env = {k: v for k, v in with_hugepages(os.environ).items() if not k.startswith("ZEXEC_")}
    env["PYTHONUNBUFFERED"] = "1"  # logs in order, as they happen
    env.update(extra)
    return env


def curve_public_key(secret: str) -> str:
    """The CurveZMQ public key (Z85) that belongs to ``secret``."""
    import zmq

    return zmq.curve_public(secret.encode()).decode()


def plan(
    d: StateDir, ports: dict[str, int], secret: str, admin: str, idle_timeout: float,
    curve_secret: str,
) -> dict[str, dict[str, Any]]:
    """Command, environment, log and endpoints (URL, health check) of each process."""
    curve_public = curve_public_key(curve_secret)
    base = [sys.executable, "-m", "zexec.apps.cli"]
    auth = f"http://{HOST}:{ports['auth']}"
    auth_env = {"ZEXEC_AUTH_MODE": "http-post", "ZEXEC_AUTH_URL": f"{auth}/auth"}
    broker_env = {
        "ZEXEC_BROKER_HOST": HOST,
        "ZEXEC_BROKER_FRONTEND_PORT": str(ports["broker"]),
        "ZEXEC_BROKER_BACKEND_PORT": str(ports["broker_backend"]),
        "ZEXEC_BROKER_CONTROL_PORT": str(ports["broker_control"]),
        "ZEXEC_BROKER_SERVER_SECRET": secret,
    }
    deploy = f"http://{HOST}:{ports['deploy']}"
    ep = f"http://{HOST}:{ports['ep']}"
    return {
        "broker": {
            "cmd": [*base, "broker"],
            "env": child_env(**broker_env, **auth_env, ZEXEC_BROKER_ADMIN_TOKEN=admin,
                             ZEXEC_BROKER_CURVE_SECRET_KEY=curve_secret,
                             ZEXEC_BROKER_SECURE_PORT=str(ports["broker_secure"])),
            "url": f"tcp://{HOST}:{ports['broker']}",
            "health": None,  # the control port's STATUS
        },
        "web": {
            "cmd": [
                *base, "web", "--tokens-file", str(d.tokens),
                "--idp-host", HOST, "--idp-port", str(ports["auth"]),
            ],
            # The Deploy API's local orchestrator reads the broker's host, backend port
            # and secret; the EP API tells clients where the Deploy API is.
            "env": child_env(
                **broker_env,
                **auth_env,
                ZEXEC_DEPLOY_HOST=HOST,
                ZEXEC_DEPLOY_PORT=str(ports["deploy"]),
                ZEXEC_DEPLOY_PREFIX=PREFIX,
                ZEXEC_DEPLOY_ORCHESTRATOR="local",
                ZEXEC_DEPLOY_STATE_DIR=str(d.orchestrator),
                ZEXEC_DEPLOY_BROKER_EXTERNAL_HOST=HOST,
                ZEXEC_DEPLOY_BROKER_EXTERNAL_PORT=str(ports["broker"]),
                ZEXEC_DEPLOY_BROKER_EXTERNAL_SECURE_PORT=str(ports["broker_secure"]),
                ZEXEC_DEPLOY_BROKER_CURVE_PUBLIC_KEY=curve_public,
                ZEXEC_DEPLOY_IDLE_TIMEOUT=str(idle_timeout),
                ZEXEC_EP_HOST=HOST,
                ZEXEC_EP_PORT=str(ports["ep"]),
                ZEXEC_EP_DEPLOY_API_URL=deploy,
            ),
            "apps": {  # in the order of zexec.apps.web.APPS
                "devidp": {"url": f"{auth}/auth", "health": f"{auth}/healthz"},
                "deploy-api": {
                    "url": deploy + PREFIX,
                    "health": f"{deploy}{PREFIX}/healthz",
                },
                "ep-api": {"url": ep, "health": f"{ep}/health"},
            },
        },
    }


def endpoints(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{component: {url, health, pid, start, process, log}}`` of a loaded stack.json,
    in :data:`COMPONENTS` order: the web process's apps each get a row with the web
    process's pid. A stack.json of the four-process layout (zexec before ``zexec web``)
    reads the same way: each process is its own component."""
    rows: dict[str, dict[str, Any]] = {}
    for pname, proc in stack.get("components", {}).items():
        common = {
            "pid": proc["pid"], "start": proc.get("start"), "process": pname,
            "log": proc.get("log"),
        }
        for name, app in (proc.get("apps") or {pname: proc}).items():
            rows[name] = {"url": app.get("url"), "health": app.get("health"), **common}
    order = {name: i for i, name in enumerate(COMPONENTS)}
    return dict(sorted(rows.items(), key=lambda kv: order.get(kv[0], len(order))))


def broker_control(
    host: str, port: int, admin: str, command: bytes = b"STATUS", timeout: float = 2.0
) -> dict[str, Any] | None:
    """One control command (``[b"", admin, command]`` on a DEALER); None if no answer."""
    import zmq

    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
    s.setsockopt(zmq.RECONNECT_IVL, 20)  # a broker still starting is seen soon after it binds
    try:
        s.connect(f"tcp://{host}:{port}")
        s.send_multipart([b"", admin.encode(), command])
        return json.loads(s.recv_multipart()[-1])
    except (zmq.ZMQError, ValueError):
        return None
    finally:
        s.close()


def healthy(
    name: str, comp: dict[str, Any], stack: dict[str, Any], admin: str, timeout: float = 2.0
) -> bool:
    """Whether a component answers its health check now."""
    if name == "broker":
        reply = broker_control(
            stack["broker_host"], stack["broker_control_port"], admin, timeout=timeout
        )
        return bool(reply and reply.get("ok"))
    return http_ok(comp["health"], timeout)


def http_ok(url: str, timeout: float) -> bool:
    """Whether ``GET url`` (plain HTTP) answers 200. The standard library's client: no
    TLS context or connection pool to set up at each of ``up``'s frequent checks."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def running(stack: dict[str, Any]) -> dict[str, bool]:
    """``{process: alive}`` for a loaded stack.json."""
    comps = stack.get("components", {})
    return {n: procs.alive(c["pid"], c.get("start")) for n, c in comps.items()}


def _choose_ports(requested: dict[str, int | None]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for name in PORT_NAMES:
        want = requested.get(name)
        if want:
            if want in ports.values() or port_in_use(want):
                raise StackError(f"port {want} (--{name.replace('_', '-')}-port) is in use")
            ports[name] = want
        else:
            port = free_port()
            while port in ports.values() or port in requested.values():
                port = free_port()
            ports[name] = port
    return ports


def up(
    d: StateDir,
    *,
    ports: dict[str, int | None],
    timeout: float,
    idle_timeout: float,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Start the stack in ``d`` (or report the running one) and return its stack.json."""
    from zexec.apps.devidp.tokens import user_id_for

    out = out or sys.stdout
    with d.locked():
        stack = d.load()
        if stack is not None:
            alive = running(stack)
            if stack.get("ready") and all(alive.values()) and set(alive) == set(PROCESSES):
                out.write(f"zexec stack already running in {d.root}\n")
                show(stack, out)
                return stack
            if any(alive.values()):
                up_now = ", ".join(n for n, a in alive.items() if a)
                raise StackError(
                    f"a stack in {d.root} is partly running ({up_now}); "
                    f"stop it with: {down_command(d.root)}"
                )
        for sub in (d.logs, d.orchestrator):
            sub.mkdir(parents=True, exist_ok=True)
        secret, admin = secret_file(d.secret), secret_file(d.admin)
        tokens = dev_tokens(d.tokens)
        chosen = _choose_ports(ports)
        curve_secret = curve_key_file(d.curve_key)
        steps = plan(d, chosen, secret, admin, idle_timeout, curve_secret)
        stack = {
            "ep_api_url": steps["web"]["apps"]["ep-api"]["url"],
            "deploy_api_url": f"http://{HOST}:{chosen['deploy']}",
            "broker_host": HOST,
            "broker_port": chosen["broker"],
            # The encrypted client port and the key to use it (public: safe to share).
            "broker_secure_port": chosen["broker_secure"],
            "broker_public_key": curve_public_key(curve_secret),
            "auth_url": steps["web"]["apps"]["devidp"]["url"],
            "tokens": tokens,
            "users": {user: user_id_for(user) for user in tokens},  # the IdP's ``sub``
            "deploy_api_prefix": PREFIX,
            "broker_url": steps["broker"]["url"],
            "broker_backend_port": chosen["broker_backend"],
            "broker_control_port": chosen["broker_control"],
            "state_dir": str(d.root),
            "python": sys.executable,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "ready": False,
            "components": {},
        }
        for stale in WEB_APPS:  # logs of the four-process layout (before `zexec web`)
            d.log(stale).unlink(missing_ok=True)
        try:
            for name in PROCESSES:
                step = steps[name]
                d.log(name).write_text("")  # one run per log: old runs are noise here
                proc = procs.spawn_detached(
                    step["cmd"], env={**step["env"], "ZEXEC_LOG_FILE": str(d.log(name))},
                    log=d.log(name), cwd=d.root,
                )  # the process rotates its own log (ZEXEC_LOG_FILE) from its first line
                comp = {"pid": proc.pid, "start": procs.start_time(proc.pid)}
                if "apps" in step:
                    comp["apps"] = step["apps"]
                else:
                    comp.update(url=step["url"], health=step["health"])
                stack["components"][name] = {**comp, "log": str(d.log(name))}
                save(d, stack)  # from here on `zexec down` can stop what exists
            _wait_ready(d, stack, admin, timeout)
        except BaseException:  # a failure or Ctrl-C: leave nothing half-started behind
            stop(d, stack, grace=5.0, out=out, quiet=True)
            d.stack_json.unlink(missing_ok=True)
            raise
        stack["ready"] = True
        save(d, stack)
    out.write(f"zexec stack is up (state dir {d.root})\n")
    show(stack, out)
    return stack


def _wait_ready(d: StateDir, stack: dict[str, Any], admin: str, timeout: float) -> None:
    """Check every component every :data:`POLL` seconds until all answer; fail with the
    log tail of the first one whose process exited or that is still silent at the
    deadline."""
    pending = endpoints(stack)
    deadline = time.monotonic() + timeout
    while pending:
        for name, comp in list(pending.items()):
            if not procs.alive(comp["pid"], comp["start"]):
                raise StackError(_failure(d, name, comp, "exited during startup"))
            if healthy(name, comp, stack, admin, timeout=1.0):
                del pending[name]
        if pending and time.monotonic() > deadline:
            name, comp = next(iter(pending.items()))
            raise StackError(_failure(d, name, comp, f"not ready after {timeout:g}s"))
        if pending:
            time.sleep(POLL)


def _failure(d: StateDir, name: str, comp: dict[str, Any], what: str) -> str:
    log = d.log(comp["process"])
    where = "" if comp["process"] == name else f" (in the {comp['process']} process)"
    return f"{name}{where} {what}; last lines of {log}:\n{procs.tail(log, 25) or '(empty log)'}"


def stop(
    d: StateDir, stack: dict[str, Any], *, grace: float, out: TextIO, quiet: bool = False
) -> list[str]:
    """Stop the components of ``stack`` and every process the local orchestrator left
    under ``d``; returns notes on what needed force."""
    notes: list[str] = []
    comps = stack.get("components", {})

    def group(names: tuple[str, ...]) -> list[tuple[int, int | None]]:
        return [(comps[n]["pid"], comps[n].get("start")) for n in names if n in comps]

    # The process of the Deploy API first: on SIGTERM it stops the users' servers
    # (orchestrator close) while the broker still runs; then the rest.
    first = tuple(n for n in comps if n == "deploy-api" or "deploy-api" in comps[n].get("apps", {}))
    rest = tuple(n for n in comps if n not in first)
    for names in (first, rest):
        killed = procs.stop_groups(group(names), grace)
        notes += [f"process group {g} outlived SIGTERM by {grace:g}s: killed" for g in killed]
    # Safety net: servers or builds the Deploy API could not stop (it was killed, or
    # crashed earlier) still have their cwd or ready file under the orchestrator dir.
    leftovers = procs.processes_under(d.orchestrator)
    if leftovers:
        notes.append(f"stopped {len(leftovers)} leftover server process(es): {leftovers}")
        procs.stop_groups([(p, procs.start_time(p)) for p in leftovers], grace)
    if not quiet:
        for note in notes:
            out.write(note + "\n")
    return notes


def down(d: StateDir, *, grace: float, out: TextIO | None = None) -> bool:
    """Stop the stack in ``d``; False if there was nothing to stop."""
    out = out or sys.stdout
    if not d.root.is_dir():
        out.write(f"no zexec stack in {d.root}\n")
        return False
    with d.locked():
        stack = d.load()
        if stack is None:
            leftovers = procs.processes_under(d.orchestrator)
            if leftovers:
                procs.stop_groups([(p, procs.start_time(p)) for p in leftovers], grace)
                out.write(f"stopped {len(leftovers)} leftover process(es) under {d.root}\n")
                return True
            out.write(f"no zexec stack in {d.root}\n")
            return False
        stop(d, stack, grace=grace, out=out)
        d.stack_json.unlink(missing_ok=True)
    out.write(f"zexec stack in {d.root} stopped\n")
    return True
