"""What ``zexec up`` prints: the URLs and tokens a user needs, and how to stop the stack.

Commands are printed so that they can be pasted as they are: the ``zexec`` of this very
installation by its full path (a venv's ``bin`` is often not on PATH), and the broker
port the SDK will really use, as the Deploy API's ``/broker-config`` reports it.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, TextIO

from zexec.apps.cli.plan import unknown_settings


def zexec_command() -> str:
    """How to run this installation's ``zexec``: the console script beside the running
    interpreter, else ``python -m zexec.apps.cli`` with that interpreter."""
    script = Path(sys.executable).parent / "zexec"
    if script.is_file():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m zexec.apps.cli"


def down_command(state_dir: str | Path) -> str:
    return f"{zexec_command()} down --state-dir {shlex.quote(str(state_dir))}"


def broker_config(deploy_api: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """``GET {deploy_api}/broker-config`` (plain HTTP on this machine), None on failure."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(deploy_api)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path.rstrip("/") + "/broker-config")
        resp = conn.getresponse()
        body = json.loads(resp.read()) if resp.status == 200 else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
    return body if isinstance(body, dict) else None


def broker_rows(stack: dict[str, Any]) -> list[tuple[str, str]]:
    """The broker's client ports: the one ``zexec.connect`` uses (decided exactly as it
    decides, from the Deploy API's ``/broker-config``), and the others."""
    from zexec.apps.client.connect import broker_address

    cfg = broker_config(stack["deploy_api_url"] + stack.get("deploy_api_prefix", "")) or {
        "broker_external_host": stack["broker_host"],
        "broker_external_port": stack["broker_port"],
        "broker_external_secure_port": stack.get("broker_secure_port"),
        "broker_tls_sha256": stack.get("broker_tls_sha256"),
    }
    used, _ = broker_address(cfg, None)
    host = cfg.get("broker_external_host")
    plain = f"tcp://{host}:{cfg.get('broker_external_port')}"
    secure = cfg.get("broker_external_secure_port") if cfg.get("broker_tls_sha256") else None
    if used == plain:
        rows = [("broker", f"{plain}  (what zexec.connect uses, and the released clients)")]
        if secure:
            rows.append(("broker (TLS)", f"tls://{host}:{secure}  "
                                         "(zexec.connect(..., encrypt=True))"))
        return rows
    return [("broker", f"{used}  (encrypted: what zexec.connect uses)"),
            ("broker (plain)", f"{plain}  (for the released clients)")]


def show(stack: dict[str, Any], out: TextIO) -> None:
    """The URLs and tokens a user needs, and how to stop."""
    rows = [
        ("EP API", f"{stack['ep_api_url']}  (zexec.connect(this URL, token))"),
        ("Deploy API", stack["deploy_api_url"] + stack.get("deploy_api_prefix", "")),
        *broker_rows(stack),
        ("identity (dev)", stack["auth_url"]),
    ]
    rows += [(f"token {user}", tok) for user, tok in stack["tokens"].items()]
    for label, value in rows:
        out.write(f"  {label:<15} {value}\n")
    state = stack["state_dir"]
    out.write(f"  {'stack file':<15} {state}/stack.json\n")
    passed = stack.get("settings_from_environment") or []
    if passed:
        out.write(f"  {'settings':<15} {', '.join(passed)}  (from the environment)\n")
    for name, near in unknown_settings(passed).items():
        out.write(f"WARNING: {name} is not a zexec setting: nothing reads it"
                  + (f" (did you mean {near}?)" if near else "") + "\n")
    iso = stack.get("isolation") or {}
    if iso:
        out.write(f"  {'isolation':<15} {iso.get('mode')}: {iso.get('description')}\n")
        if iso.get("mode") == "none":
            out.write("WARNING: the users of this stack are not isolated from each other "
                      "(see docs/security.md, Tenant isolation)\n")
    out.write(f"stop it with: {down_command(state)}\n")
