"""``zexec up`` / ``zexec down``: the whole stack on this machine, as background processes.

Two processes: the broker (``zexec broker``) and the web process (``zexec web``), which
serves the development IdP, the Deploy API (with the local orchestrator) and the EP API,
each on its own port, from one interpreter (one FastAPI import instead of three: on a
small machine that is most of the start-up time). The users' servers are processes of
their own, started by the Deploy API, isolated from each other as the machine allows
(:mod:`zexec.adapters.orchestrator_local.isolation`).

Layout of the state directory ``DIR`` (every secret file mode 0600):

* ``stack.json``: URLs, ports, tokens, the isolation mode, the options, and each
  process's ``(pid, start)`` and command line under ``components`` (``broker``; ``web``
  with its ``apps``: URL and health check of each); written as soon as the processes
  exist (so ``down`` can clean up an interrupted ``up``) and again with ``"ready": true``
  once every app answers;
* ``ports.json``: the ports, pinned at the first ``up`` (see :mod:`.plan`);
* ``tokens.json``: the development IdP's token file (users ``alice`` and ``bob``);
* ``secrets/``: one file per secret setting (``ZEXEC_SECRETS_DIR`` of the broker and
  the web process): the server secret (broker <-> servers credentials), the admin token
  (broker control), the broker's TLS key (its certificate, public, is ``broker_tls.crt``);
* ``logs/broker.log``, ``logs/web.log`` (each line tagged ``[devidp]``, ``[deploy-api]``
  or ``[ep-api]``); ``orchestrator/``: the local orchestrator's environments, server
  logs, records and ready files; ``users/``: the users' private working directories.

Secrets, tokens and ports are reused from an earlier ``up`` of the same directory, so
tokens pasted into a notebook keep working across restarts, and an open session
reconnects by itself. ``up`` on a stack with a dead process (killed, crashed) restarts
just that one, with the recorded ports and options; the Deploy API it restarts adopts
the users' servers that still run (or stops those it cannot trust). Everything listens on
127.0.0.1.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from zexec.apps import web
from zexec.apps.cli import procs
from zexec.apps.cli.banner import down_command, show
from zexec.apps.cli.plan import HOST, PORT_NAMES, PREFIX, choose_ports, passed_settings, plan
from zexec.apps.cli.state import (
    StackError,
    StateDir,
    UsageError,
    dev_tokens,
    save,
    secret_file,
    tls_files,
)

__all__ = ["PORT_NAMES", "StackError", "StateDir", "UsageError", "down", "up"]

#: The stack's parts as users name them (``zexec status`` rows, ``zexec logs NAME``).
COMPONENTS = ("devidp", "broker", "deploy-api", "ep-api")
#: The processes, in start order; ``down`` stops the web process first (its Deploy API
#: stops the users' servers while the broker still runs), then the broker.
PROCESSES = ("broker", "web")
#: The apps the web process serves.
WEB_APPS = web.APPS
#: Seconds between two rounds of health checks while ``up`` waits.
POLL = 0.05
#: Seconds ``up`` waits for running servers to register with a restarted broker.
SERVER_RETURN = 15.0
#: ``up``'s options and their defaults; a restart keeps the recorded ones.
DEFAULT_OPTIONS = {"idle_timeout": 3600.0, "isolation": "auto", "single_trust_domain": False}


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


def healthy(
    name: str, comp: dict[str, Any], stack: dict[str, Any], admin: str, timeout: float = 2.0
) -> bool:
    """Whether a component answers its health check now."""
    if name == "broker":
        from zexec.adapters.transport_zmq.control_client import broker_control

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


def _options(
    stack: dict[str, Any] | None, given: dict[str, Any], live: bool
) -> dict[str, Any]:
    """``up``'s options: the ones given, else those recorded in ``stack``, else the
    defaults. A stack with a live process keeps its own: another one given is an error."""
    recorded = (stack or {}).get("options") or {}
    opts = {k: recorded.get(k, v) for k, v in DEFAULT_OPTIONS.items()}
    for key, value in given.items():
        if value is None:
            continue
        if live and value != opts[key]:
            raise UsageError(
                f"the stack in DIR runs with {key.replace('_', '-')} {opts[key]!r}; stop it "
                "(zexec down) to change that"
            )
        opts[key] = value
    return opts


def _isolation(d: StateDir, options: dict[str, Any]):
    """The isolation ``options`` ask for, resolved; a uid without a sandbox is checked
    here, before anything starts: its servers must reach their files as other uids."""
    from zexec.adapters.orchestrator_local.isolation import resolve, unreachable
    from zexec.adapters.orchestrator_local.tenancy import paths_to_reach

    reach = paths_to_reach(d.root)
    iso = resolve(options["isolation"], single_trust_domain=options["single_trust_domain"],
                  reach=reach)
    closed = unreachable(reach) if iso.mode == "uid" else []
    if closed:
        raise UsageError(
            f"isolation 'uid' (no sandbox): the users' servers, running as other uids, "
            f"must pass through {closed[0]}, which is closed to them (no o+x); use "
            "--isolation uid+sandbox (bubblewrap), allow passing (chmod o+x), or put the "
            "state directory and Python elsewhere"
        )
    return iso


def up(
    d: StateDir,
    *,
    ports: dict[str, int | None],
    timeout: float,
    idle_timeout: float | None = None,
    isolation: str | None = None,
    single_trust_domain: bool | None = None,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """Start the stack in ``d``, or the processes of it that are not running (the rest
    keeps running), and return its stack.json. Options left None keep the recorded
    value (else the default)."""
    from zexec.apps.devidp.tokens import user_id_for

    out = out or sys.stdout
    given = {"idle_timeout": idle_timeout, "isolation": isolation,
             "single_trust_domain": single_trust_domain}
    with d.locked():
        old = d.load()
        alive = running(old) if old is not None else {}
        live = [n for n in PROCESSES if alive.get(n)]
        if old is not None and live == list(PROCESSES) and old.get("ready"):
            out.write(f"zexec stack already running in {d.root}\n")
            show(old, out)
            return old
        if live and (old is None or "options" not in old or "ports" not in old):
            raise StackError(
                f"a stack in {d.root} is partly running ({', '.join(live)}) and was started "
                f"by an older zexec; stop it with: {down_command(d.root)}"
            )
        options = _options(old, given, bool(live))
        iso = _isolation(d, options)  # a resolved mode: the web process must not guess again
        d.prepare(traversable=iso.mode == "uid")
        if live:
            for name, port in ports.items():
                if port and port != old["ports"][name]:
                    raise UsageError(f"the running stack uses port {old['ports'][name]} for "
                                     f"{name}; stop it (zexec down) to change that")
            chosen = old["ports"]
        else:
            chosen = choose_ports(d, ports, out)
        secret_file(d.secret)
        admin = secret_file(d.admin)
        tokens = dev_tokens(d.tokens)
        tls_pin = tls_files(d.tls_cert, d.tls_key, HOST)
        steps = plan(d, chosen, {**options, "isolation": iso.mode})
        stack = {
            "ep_api_url": steps["web"]["apps"]["ep-api"]["url"],
            "deploy_api_url": f"http://{HOST}:{chosen['deploy']}",
            "broker_host": HOST,
            "broker_port": chosen["broker"],
            # The encrypted client port and its certificate's pin (public: safe to share).
            "broker_secure_port": chosen["broker_secure"],
            "broker_tls_sha256": tls_pin,
            "auth_url": steps["web"]["apps"]["devidp"]["url"],
            "tokens": tokens,
            "users": {user: user_id_for(user) for user in tokens},  # the IdP's ``sub``
            "deploy_api_prefix": PREFIX,
            "broker_url": steps["broker"]["url"],
            "broker_backend_port": chosen["broker_backend"],
            "broker_control_port": chosen["broker_control"],
            "ports": chosen,
            "options": options,
            # Names only: values may be secrets. (What up sets itself wins over them.)
            "settings_from_environment": sorted(passed_settings()),
            "isolation": iso.as_dict(),
            "state_dir": str(d.root),
            "python": sys.executable,
            "started_at": (old or {}).get("started_at") if live else
            datetime.now(UTC).isoformat(timespec="seconds"),
            "ready": False,
            "components": {n: old["components"][n] for n in live},
        }
        for stale in WEB_APPS:  # logs of the four-process layout (before `zexec web`)
            d.log(stale).unlink(missing_ok=True)
        started: list[str] = []
        try:
            for name in PROCESSES:
                if name in live:
                    continue
                step = steps[name]
                if not live:
                    d.log(name).write_text("")  # one run per log: old runs are noise here
                proc = procs.spawn_detached(
                    step["cmd"], env={**step["env"], "ZEXEC_LOG_FILE": str(d.log(name))},
                    log=d.log(name), cwd=d.root,
                )  # the process rotates its own log (ZEXEC_LOG_FILE) from its first line
                started.append(name)
                comp = {"pid": proc.pid, "start": procs.start_time(proc.pid), "cmd": step["cmd"]}
                if "apps" in step:
                    comp["apps"] = step["apps"]
                else:
                    comp.update(url=step["url"], health=step["health"])
                stack["components"][name] = {**comp, "log": str(d.log(name))}
                save(d, stack)  # from here on `zexec down` can stop what exists
            _wait_ready(d, stack, admin, timeout)
            if "broker" in started:
                _wait_servers(d, stack, admin, min(timeout, SERVER_RETURN), out)
        except BaseException:  # a failure or Ctrl-C: leave nothing half-started behind
            mine = {"components": {n: stack["components"][n] for n in started}}
            stop(d, mine if live else stack, grace=5.0, out=out, quiet=True, sweep=not live)
            if not live:
                d.stack_json.unlink(missing_ok=True)
            else:
                save(d, {**stack, "components": {n: stack["components"][n] for n in live}})
            raise
        stack["ready"] = True
        save(d, stack)
    if started != list(PROCESSES):
        out.write(f"restarted {', '.join(started)}; {', '.join(live)} kept running\n")
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


def _wait_servers(
    d: StateDir, stack: dict[str, Any], admin: str, timeout: float, out: TextIO
) -> None:
    """After a broker restart: wait until the users' servers that still run have
    registered with it again (they retry every second or so), so that a call made right
    after ``up`` finds its server; a server that does not within ``timeout`` is named."""
    from zexec.adapters.orchestrator_local.records import Records
    from zexec.adapters.transport_zmq.control_client import broker_control

    expected = {r["user_id"] for r in Records(d.orchestrator / "servers", create=False)
                .load_all().values()
                if r.get("role") == "server" and procs.alive(r["pid"], r.get("start"))}
    deadline = time.monotonic() + timeout
    while expected:
        reply = broker_control(stack["broker_host"], stack["broker_control_port"], admin) or {}
        expected -= set((reply.get("status") or {}).get("servers") or {})
        if not expected or time.monotonic() > deadline:
            break
        time.sleep(POLL)
    if expected:
        out.write(f"note: not yet registered with the new broker: {', '.join(sorted(expected))}\n")


def _failure(d: StateDir, name: str, comp: dict[str, Any], what: str) -> str:
    log = d.log(comp["process"])
    where = "" if comp["process"] == name else f" (in the {comp['process']} process)"
    return f"{name}{where} {what}; last lines of {log}:\n{procs.tail(log, 25) or '(empty log)'}"


def stop(
    d: StateDir, stack: dict[str, Any], *, grace: float, out: TextIO, quiet: bool = False,
    sweep: bool = True,
) -> list[str]:
    """Stop the components of ``stack`` and (``sweep``) every process the local
    orchestrator left under ``d``; returns notes on what needed force."""
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
    leftovers = _leftovers(d) if sweep else []
    if leftovers:
        notes.append(f"stopped {len(leftovers)} leftover server process(es): {leftovers}")
        procs.stop_groups([(p, procs.start_time(p)) for p in leftovers], grace)
    if not quiet:
        for note in notes:
            out.write(note + "\n")
    return notes


def _leftovers(d: StateDir) -> list[int]:
    """Processes started by the local orchestrator of ``d`` that still run: found by
    their working directory (a user's, or the orchestrator's for builds) or ready file."""
    return sorted(set(procs.processes_under(d.orchestrator)) | set(procs.processes_under(d.users)))


def down(d: StateDir, *, grace: float, out: TextIO | None = None) -> bool:
    """Stop the stack in ``d``; False if there was nothing to stop."""
    out = out or sys.stdout
    if not d.root.is_dir():
        out.write(f"no zexec stack in {d.root}\n")
        return False
    with d.locked():
        stack = d.load()
        if stack is None:
            leftovers = _leftovers(d)
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
