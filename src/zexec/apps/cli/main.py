"""The ``zexec`` command (argparse): run one component, or the whole stack on this machine.

Exit status: 0 success; 1 the command could not do its job (a component failed to
start, a stack is partly running, a component is down in ``status``); 2 bad input
(arguments, settings, configuration); 130 interrupted. Errors are one clear message on
stderr, never a bare traceback (``ZEXEC_DEBUG=1`` adds the traceback of unexpected
ones). Heavy imports (FastAPI, uvicorn, zmq) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys

from zexec.apps.cli import stack as st
from zexec.apps.guard import guard

DEFAULT_STATE_DIR = "~/.zexec"

EPILOG = """\
Quick start:  zexec up --state-dir .state   (then see stack.json in that directory)
              zexec status --state-dir .state
              zexec down --state-dir .state
The component commands (broker, server, deploy-api, ep-api, web) read their settings
from ZEXEC_* environment variables; see the README's configuration table.
"""

COMPONENT_HELP = {
    "broker": (
        "run the ZeroMQ broker",
        "Run the broker (settings: ZEXEC_BROKER_*, identity: ZEXEC_AUTH_*). "
        "SIGTERM drains in-flight calls, then exits.",
    ),
    "server": (
        "run one user's server (normally started by an orchestrator)",
        "Run a per-user server (settings: ZEXEC_SERVER_*: broker URL, user id and "
        "the credential derived from the broker secret).",
    ),
    "deploy-api": (
        "run the Deploy API (uvicorn)",
        "Serve the Deploy API (settings: ZEXEC_DEPLOY_*, ZEXEC_AUTH_*, the "
        "broker's ZEXEC_BROKER_HOST/BACKEND_PORT/SERVER_SECRET, ZEXEC_K8S_*). "
        "On SIGTERM it stops the servers it started.",
    ),
    "ep-api": (
        "run the EP API (uvicorn)",
        "Serve the Endpoint API (settings: ZEXEC_EP_*, ZEXEC_AUTH_*).",
    ),
}

PORT_LABELS = {
    "auth": "development IdP",
    "broker": "broker client (frontend)",
    "broker_secure": "broker encrypted client (TLS)",
    "broker_backend": "broker server (backend)",
    "broker_control": "broker control",
    "deploy": "Deploy API",
    "ep": "EP API",
}


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, not {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"seconds must be a finite number >= 0, not {text}")
    return value


def lines(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of lines: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"lines must be >= 0, not {value}")
    return value


def _state_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        default=os.environ.get("ZEXEC_STATE_DIR") or DEFAULT_STATE_DIR,
        help="where the stack keeps stack.json, tokens, secrets, logs and environments "
        f"(default: $ZEXEC_STATE_DIR, else {DEFAULT_STATE_DIR})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zexec",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="zexec: run Python functions on remote compute through a ZeroMQ broker.",
    )
    from zexec import __version__

    parser.add_argument("--version", action="version", version=f"zexec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for name, (short, long) in COMPONENT_HELP.items():
        sub.add_parser(name, help=short, description=long).set_defaults(func=run_component)
    idp = sub.add_parser(
        "devidp",
        help="run the development identity provider (uvicorn)",
        add_help=False,
        description="Run the development identity provider; `zexec devidp --help` for options.",
    )
    idp.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    idp.set_defaults(func=run_devidp)
    p = sub.add_parser(
        "web",
        help="run the development IdP, the Deploy API and the EP API in one process",
        description="Serve the development identity provider, the Deploy API and the EP "
        "API in one process (one uvicorn server each, on its own port): what `zexec up` "
        "runs. The APIs read the same ZEXEC_* settings as `zexec deploy-api` and `zexec "
        "ep-api` (ZEXEC_DEPLOY_HOST/PORT, ZEXEC_EP_HOST/PORT, ...); the IdP serves "
        "--tokens-file. Log lines are tagged [devidp], [deploy-api] or [ep-api]. SIGTERM "
        "stops all three; the Deploy API's shutdown stops the servers it started.",
    )
    p.add_argument(
        "--tokens-file",
        required=True,
        metavar="F",
        help="the IdP's JSON token file (token -> claims)",
    )
    p.add_argument(
        "--idp-host",
        default="127.0.0.1",
        metavar="HOST",
        help="the IdP's address (default %(default)s)",
    )
    p.add_argument(
        "--idp-port",
        type=port,
        default=8090,
        metavar="PORT",
        help="the IdP's port (default %(default)s)",
    )
    p.set_defaults(func=run_web)

    p = sub.add_parser(
        "up",
        help="run the whole stack on this machine, in the background",
        description="Start two background processes: the broker, and the web process "
        "(`zexec web`) serving the development IdP (tokens for alice and bob), the Deploy "
        "API with the local orchestrator and the EP API, each on its own port; return "
        "when all answer; print URLs and tokens; write DIR/stack.json. Ports not given "
        "are the ones pinned in DIR/ports.json by the first up, else free ones. Does "
        "nothing if the stack in DIR already runs; restarts just the processes of it that "
        "died (their Deploy API adopts the users' servers still running). The ZEXEC_* "
        "settings of its environment reach the stack's processes (not the SDK's own, "
        "nor the users' servers); a name no zexec setting has is named in a warning, "
        "with the setting it is closest to.",
    )
    _state_dir(p)
    for name in st.PORT_NAMES:
        flag = name.replace("_", "-")
        p.add_argument(
            f"--{flag}-port",
            type=port,
            metavar="PORT",
            dest=f"port_{name}",
            help=f"{PORT_LABELS[name]} port (default: a free one)",
        )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=120.0,
        help="seconds to wait for every component to be ready (default %(default)s)",
    )
    p.add_argument(
        "--idle-timeout",
        type=seconds,
        help="stop a user's server after this many idle seconds; 0 = never (default: as "
        "recorded by the previous up, else 3600)",
    )
    p.add_argument(
        "--isolation",
        choices=("auto", "uid+sandbox", "uid", "sandbox", "none"),
        help="how users' servers are kept apart: own uid (needs root), bubblewrap sandbox, "
        "both, or none; auto = the strongest this machine allows (default: as recorded, "
        "else auto)",
    )
    p.add_argument(
        "--single-trust-domain",
        action="store_true",
        default=None,
        help="when users cannot be isolated, let more than one user use the stack anyway "
        "(they all trust each other); without it a second user is refused "
        "(default: as recorded; also ZEXEC_DEPLOY_SINGLE_TRUST_DOMAIN=true)",
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "down",
        help="stop the stack and every user server it started",
        description="SIGTERM the web process's group first (its Deploy API stops the "
        "users' servers), then the broker's, SIGKILL what is left after --grace seconds, "
        "then stop any server process still running under DIR/orchestrator.",
    )
    _state_dir(p)
    p.add_argument(
        "--grace",
        type=seconds,
        default=15.0,
        help="seconds between SIGTERM and SIGKILL (default %(default)s)",
    )
    p.set_defaults(func=cmd_down)

    p = sub.add_parser(
        "status",
        help="show components and user servers",
        description="Show each component (devidp, broker, deploy-api, ep-api: up / "
        "unhealthy / down, URL, pid; three of them share the web process) and each user "
        "server (phase from the Deploy API, pid from the broker). Exit 1 if a component is "
        "not up or no stack runs.",
    )
    _state_dir(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "logs",
        help="show the last lines of component or server logs",
        description="Print the last lines of COMPONENT's log: broker; web (the whole log "
        "of the web process); devidp, deploy-api or ep-api (the lines of the web "
        "process's log tagged with that app, and the process's own); or a user's server "
        "by user name or id. Without COMPONENT: the broker's and the web process's logs.",
    )
    _state_dir(p)
    p.add_argument("component", nargs="?", metavar="COMPONENT", help="whose log")
    p.add_argument(
        "-n", "--lines", type=lines, default=40, help="how many lines (default %(default)s)"
    )
    p.set_defaults(func=cmd_logs)
    return parser


def run_component(args: argparse.Namespace) -> int:
    if args.command == "broker":
        from zexec.apps.broker.app import main
    elif args.command == "server":
        from zexec.apps.server.app import main
    elif args.command == "deploy-api":
        from zexec.apps.deploy_api.__main__ import main
    else:
        from zexec.apps.ep_api.__main__ import main
    return main() or 0


def run_devidp(args: argparse.Namespace) -> int:
    from zexec.apps.devidp.__main__ import main

    main(args.args, prog="zexec devidp")
    return 0


def run_web(args: argparse.Namespace) -> int:
    from zexec.apps.web import main

    return main(args.tokens_file, args.idp_host, args.idp_port)


def cmd_up(args: argparse.Namespace) -> int:
    from zexec.apps.extras import require_server

    require_server("zexec up")  # before anything starts: not a component failing later
    ports = {name: getattr(args, f"port_{name}") for name in st.PORT_NAMES}
    given = [p for p in ports.values() if p]
    if len(given) != len(set(given)):
        raise st.UsageError("the same port is given for two components")
    trust = args.single_trust_domain
    if trust is None and os.environ.get("ZEXEC_DEPLOY_SINGLE_TRUST_DOMAIN"):
        from zexec.settings import DeploySettings

        trust = DeploySettings().single_trust_domain or None
    st.up(
        st.StateDir(args.state_dir),
        ports=ports,
        timeout=args.timeout,
        idle_timeout=args.idle_timeout,
        isolation=args.isolation,
        single_trust_domain=trust,
    )
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    st.down(st.StateDir(args.state_dir), grace=args.grace)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from zexec.apps.cli.report import status

    return status(st.StateDir(args.state_dir), sys.stdout, as_json=args.json)


def cmd_logs(args: argparse.Namespace) -> int:
    from zexec.apps.cli.report import logs

    return logs(st.StateDir(args.state_dir), args.component, args.lines, sys.stdout)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["devidp"]:
        # argparse's REMAINDER drops a leading option (`zexec devidp --help`): hand the
        # arguments to the IdP's own parser untouched.
        return guard("devidp", lambda: run_devidp(argparse.Namespace(args=argv[1:])))
    parser = build_parser()
    args = parser.parse_args(argv)  # bad arguments: usage + message, exit 2
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return guard(args.command, lambda: args.func(args))
