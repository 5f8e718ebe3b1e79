"""``zexec up`` / ``zexec down``: the whole stack on this machine, as background processes.

Layout of the state directory ``DIR`` (every secret file mode 0600):

* ``stack.json``: URLs, ports, tokens and the components' ``(pid, start)``; written as
  soon as the processes exist (so ``down`` can clean up an interrupted ``up``) and again
  with ``"ready": true`` once every component answers;
* ``tokens.json``: the development IdP's token file (users ``alice`` and ``bob``);
* ``server_secret`` (broker <-> servers credentials), ``admin_token`` (broker control);
* ``logs/<component>.log``; ``orchestrator/``: the local orchestrator's environments,
  server logs (``orchestrator/logs/``) and ready files.

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

from zexec.apps.cli import procs
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
#: Start order; ``down`` stops the Deploy API first (it stops the users' servers while
#: the broker still runs), then the rest together.
COMPONENTS = ("devidp", "broker", "deploy-api", "ep-api")
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
    reconfigure the stack) plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEXEC_")}
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
    """Command, environment, URL and readiness check of each component."""
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
        "devidp": {
            "cmd": [
                *base,
                "devidp",
                "--tokens-file",
                str(d.tokens),
                "--host",
                HOST,
                "--port",
                str(ports["auth"]),
            ],
            "env": child_env(),
            "url": f"{auth}/auth",
            "health": f"{auth}/healthz",
        },
        "broker": {
            "cmd": [*base, "broker"],
            "env": child_env(**broker_env, **auth_env, ZEXEC_BROKER_ADMIN_TOKEN=admin,
                             ZEXEC_BROKER_CURVE_SECRET_KEY=curve_secret,
                             ZEXEC_BROKER_SECURE_PORT=str(ports["broker_secure"])),
            "url": f"tcp://{HOST}:{ports['broker']}",
            "health": None,  # the control port's STATUS
        },
        "deploy-api": {
            "cmd": [*base, "deploy-api"],
            # The local orchestrator reads the broker's host, backend port and secret.
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
            ),
            "url": deploy + PREFIX,
            "health": f"{deploy}{PREFIX}/healthz",
        },
        "ep-api": {
            "cmd": [*base, "ep-api"],
            "env": child_env(
                **auth_env,
                ZEXEC_EP_HOST=HOST,
                ZEXEC_EP_PORT=str(ports["ep"]),
                ZEXEC_EP_DEPLOY_API_URL=deploy,
            ),
            "url": ep,
            "health": f"{ep}/health",
        },
    }


def broker_control(
    host: str, port: int, admin: str, command: bytes = b"STATUS", timeout: float = 2.0
) -> dict[str, Any] | None:
    """One control command (``[b"", admin, command]`` on a DEALER); None if no answer."""
    import zmq

    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
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
    import httpx

    try:
        return httpx.get(comp["health"], timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def running(stack: dict[str, Any]) -> dict[str, bool]:
    """``{component: process alive}`` for a loaded stack.json."""
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
    from zexec.apps.devidp.tokens import user_id_for  # imports FastAPI: only here

    out = out or sys.stdout
    with d.locked():
        stack = d.load()
        if stack is not None:
            alive = running(stack)
            if stack.get("ready") and all(alive.values()) and len(alive) == len(COMPONENTS):
                out.write(f"zexec stack already running in {d.root}\n")
                show(stack, out)
                return stack
            if any(alive.values()):
                up_now = ", ".join(n for n, a in alive.items() if a)
                raise StackError(
                    f"a stack in {d.root} is partly running ({up_now}); "
                    f"stop it with: zexec down --state-dir {d.root}"
                )
        for sub in (d.logs, d.orchestrator):
            sub.mkdir(parents=True, exist_ok=True)
        secret, admin = secret_file(d.secret), secret_file(d.admin)
        tokens = dev_tokens(d.tokens)
        chosen = _choose_ports(ports)
        curve_secret = curve_key_file(d.curve_key)
        steps = plan(d, chosen, secret, admin, idle_timeout, curve_secret)
        stack = {
            "ep_api_url": steps["ep-api"]["url"],
            "deploy_api_url": f"http://{HOST}:{chosen['deploy']}",
            "broker_host": HOST,
            "broker_port": chosen["broker"],
            # The encrypted client port and the key to use it (public: safe to share).
            "broker_secure_port": chosen["broker_secure"],
            "broker_public_key": curve_public_key(curve_secret),
            "auth_url": steps["devidp"]["url"],
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
        try:
            for name in COMPONENTS:
                step = steps[name]
                d.log(name).write_text("")  # one run per log: old runs are noise here
                proc = procs.spawn_detached(
                    step["cmd"], env=step["env"], log=d.log(name), cwd=d.root
                )
                stack["components"][name] = {
                    "pid": proc.pid,
                    "start": procs.start_time(proc.pid),
                    "url": step["url"],
                    "health": step["health"],
                    "log": str(d.log(name)),
                }
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
    """Poll every component until it answers; fail with the log tail of the first one
    that exited or is still silent at the deadline."""
    pending = dict(stack["components"])
    deadline = time.monotonic() + timeout
    while pending:
        for name, comp in list(pending.items()):
            if not procs.alive(comp["pid"], comp["start"]):
                raise StackError(_failure(d, name, "exited during startup"))
            if healthy(name, comp, stack, admin, timeout=1.0):
                del pending[name]
        if pending and time.monotonic() > deadline:
            name = next(iter(pending))
            raise StackError(_failure(d, name, f"not ready after {timeout:g}s"))
        if pending:
            time.sleep(0.1)


def _failure(d: StateDir, name: str, what: str) -> str:
    log = procs.tail(d.log(name), 25) or "(empty log)"
    return f"{name} {what}; last lines of {d.log(name)}:\n{log}"


def show(stack: dict[str, Any], out: TextIO) -> None:
    """The URLs and tokens a user needs, and how to stop."""
    rows = [
        ("EP API", stack["ep_api_url"]),
        ("Deploy API", stack["deploy_api_url"] + stack.get("deploy_api_prefix", "")),
        ("broker", f"tcp://{stack['broker_host']}:{stack['broker_port']}"),
        ("identity (dev)", stack["auth_url"]),
    ]
    rows += [(f"token {user}", tok) for user, tok in stack["tokens"].items()]
    for label, value in rows:
        out.write(f"  {label:<15} {value}\n")
    state = stack["state_dir"]
    out.write(f"  {'stack file':<15} {state}/stack.json\n")
    out.write(f"stop it with: zexec down --state-dir {state}\n")


def stop(
    d: StateDir, stack: dict[str, Any], *, grace: float, out: TextIO, quiet: bool = False
) -> list[str]:
    """Stop the components of ``stack`` and every process the local orchestrator left
    under ``d``; returns notes on what needed force."""
    notes: list[str] = []
    comps = stack.get("components", {})

    def group(names: tuple[str, ...]) -> list[tuple[int, int | None]]:
        return [(comps[n]["pid"], comps[n].get("start")) for n in names if n in comps]

    # The Deploy API first: on SIGTERM it stops the users' servers (orchestrator close).
    for names in (("deploy-api",), ("ep-api", "broker", "devidp")):
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
