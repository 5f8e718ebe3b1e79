"""What ``zexec up`` starts: the ports (pinned in the state directory), and each
process's command line, environment and endpoints.

Ports are chosen once and kept in ``DIR/ports.json``: a later ``up`` (after ``down``, a
crash, a reboot) binds the same ones, so an open ``zexec.connect`` session, whose tokens
are unchanged too, reconnects by itself. A port given on the command line replaces the
pinned one. Checks bind with ``SO_REUSEADDR``, as the broker and uvicorn do: a port whose
old connections linger in TIME_WAIT after a crash counts as free.

Secrets never travel in an environment: the broker and the web process get
``ZEXEC_SECRETS_DIR`` (files named after the settings, mode 0600, see
:mod:`zexec.settings`) instead.
"""

from __future__ import annotations

import difflib
import json
import os
import socket
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from zexec.adapters.hugepages import with_hugepages
from zexec.apps.cli.state import StackError, StateDir, write_private

HOST = "127.0.0.1"
PREFIX = "/rexec"
PORT_NAMES = ("auth", "broker", "broker_secure", "broker_backend", "broker_control", "deploy",
              "ep")


def _bindable_socket() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s


def free_port() -> int:
    with _bindable_socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether something listens on ``port`` (TIME_WAIT leftovers do not count)."""
    with _bindable_socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def pinned_ports(d: StateDir) -> dict[str, int]:
    try:
        data = json.loads(d.ports.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if k in PORT_NAMES and isinstance(v, int)}


def choose_ports(d: StateDir, requested: dict[str, int | None], out: TextIO) -> dict[str, int]:
    """Each port: as requested, else as pinned (unless something else took it: then a
    free one, said on ``out``), else a free one; the result is pinned."""
    pinned = pinned_ports(d)
    ports: dict[str, int] = {}
    for name in PORT_NAMES:
        want = requested.get(name)
        flag = f"--{name.replace('_', '-')}-port"
        if want:
            if want in ports.values() or port_in_use(want):
                raise StackError(f"port {want} ({flag}) is in use")
            ports[name] = want
            continue
        old = pinned.get(name)
        if old and old not in ports.values() and old not in requested.values():
            if not port_in_use(old):
                ports[name] = old
                continue
            out.write(f"note: port {old} ({flag}, pinned in {d.ports}) is taken by another "
                      "program: using another one; open sessions must reconnect\n")
        port = free_port()
        while port in ports.values() or port in requested.values():
            port = free_port()
        ports[name] = port
    write_private(d.ports, json.dumps(ports, indent=2) + "\n")
    return ports


#: ``ZEXEC_*`` variables of the SDK and the CLI themselves: never passed to the stack.
CLIENT_SETTINGS = frozenset({"ZEXEC_BROKER_URL", "ZEXEC_TOKEN", "ZEXEC_BROKER_TLS_PIN",
                             "ZEXEC_STATE_DIR", "ZEXEC_DEBUG"})


def passed_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``ZEXEC_*`` settings of the environment ``zexec up`` runs in that reach the
    stack's processes (``ZEXEC_DEPLOY_MAX_CPUS=8 zexec up``): all but the SDK's and the
    CLI's own (:data:`CLIENT_SETTINGS`). What ``up`` sets itself (ports, paths,
    secrets: see :func:`plan`) wins over them. Users' servers see none of them (the
    local orchestrator scrubs ``ZEXEC_*``)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items()
            if k.startswith("ZEXEC_") and k not in CLIENT_SETTINGS}


def unknown_settings(names: Iterable[str]) -> dict[str, str | None]:
    """Of ``names`` (settings passed to the stack), those nothing in zexec reads, each
    with the known name it is closest to (a typo, likely), or None."""
    from zexec.settings import setting_names  # pydantic: the server extra, as `up` needs

    known = setting_names()
    return {name: next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.8)), None)
            for name in names if name not in known}


def child_env(**extra: str) -> dict[str, str]:
    """This environment with only the :func:`passed_settings` of ``ZEXEC_*``, huge pages
    for large buffers (the broker relays payloads; see :mod:`zexec.adapters.hugepages`),
    and ``extra`` over all of it."""
    env = {k: v for k, v in with_hugepages(os.environ).items() if not k.startswith("ZEXEC_")}
    env.update(passed_settings())
    env["PYTHONUNBUFFERED"] = "1"  # logs in order, as they happen
    env.update(extra)
    return env


def plan(
    d: StateDir, ports: dict[str, int], options: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Command, environment, log and endpoints (URL, health check) of each process.
    ``options``: ``idle_timeout``, ``isolation`` (a resolved mode), ``single_trust_domain``."""
    base = [sys.executable, "-m", "zexec.apps.cli"]
    auth = f"http://{HOST}:{ports['auth']}"
    auth_env = {"ZEXEC_AUTH_MODE": "http-post", "ZEXEC_AUTH_URL": f"{auth}/auth"}
    broker_env = {
        "ZEXEC_BROKER_HOST": HOST,
        "ZEXEC_BROKER_FRONTEND_PORT": str(ports["broker"]),
        "ZEXEC_BROKER_BACKEND_PORT": str(ports["broker_backend"]),
        "ZEXEC_BROKER_CONTROL_PORT": str(ports["broker_control"]),
        "ZEXEC_SECRETS_DIR": str(d.secrets),
    }
    deploy = f"http://{HOST}:{ports['deploy']}"
    ep = f"http://{HOST}:{ports['ep']}"
    return {
        "broker": {
            "cmd": [*base, "broker"],
            "env": child_env(**broker_env, **auth_env,
                             ZEXEC_BROKER_TLS_CERT_FILE=str(d.tls_cert),
                             ZEXEC_BROKER_TLS_KEY_FILE=str(d.tls_key),
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
                ZEXEC_DEPLOY_USERS_DIR=str(d.users),
                ZEXEC_DEPLOY_ISOLATION=options["isolation"],
                ZEXEC_DEPLOY_SINGLE_TRUST_DOMAIN=str(options["single_trust_domain"]).lower(),
                ZEXEC_DEPLOY_BROKER_EXTERNAL_HOST=HOST,
                ZEXEC_DEPLOY_BROKER_EXTERNAL_PORT=str(ports["broker"]),
                ZEXEC_DEPLOY_BROKER_EXTERNAL_SECURE_PORT=str(ports["broker_secure"]),
                ZEXEC_DEPLOY_BROKER_TLS_CERT_FILE=str(d.tls_cert),
                ZEXEC_DEPLOY_IDLE_TIMEOUT=str(options["idle_timeout"]),
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
