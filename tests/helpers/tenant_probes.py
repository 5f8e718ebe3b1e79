"""What one tenant's remote code tries against another tenant and the stack: the attacks
of issue 9, each returning whether it was refused. ``probe_all`` runs as alice's remote
function (pickled by value: the servers cannot import ``tests``); the test (or
``bench/tenant_probes.py``) hands it the targets it knows as the operator, and checks
what came back for secrets itself.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

#: Probe names in the order of the issue, with what each tries.
PROBES = {
    "stack_files": "read stack.json, tokens.json and the secrets of the state directory",
    "environ": "read /proc/<pid>/environ of the broker, the web process and bob's server",
    "other_files": "read and list bob's working directory",
    "other_log": "read bob's server log",
    "register": "register with the broker as bob's server (every credential found)",
    "signal": "SIGKILL bob's server; signal (0: the permission check) the broker and web",
}


def probe_all(targets: dict[str, Any]) -> dict[str, Any]:
    """Every probe; ``{"results": {probe: {"refused": bool, "detail": str}},
    "readable_environ": {pid: text}, "control_registered": bool}``.

    ``targets``: ``stack_files`` (paths), ``pids`` ({name: host pid}), ``other_files``
    (paths; directories are listed), ``other_log`` (path), ``backend`` (broker backend
    URL), ``other_user_id``, ``control`` ((user id, valid credential) of a throwaway
    identity: proves the registration probe can register at all).
    """
    import os
    import signal

    results: dict[str, dict[str, Any]] = {}

    def attempt(name: str, actions: list) -> None:
        done, errors = [], []
        for label, action in actions:
            try:
                action()
                done.append(label)
            except OSError as exc:
                errors.append(f"{label}: {type(exc).__name__}")
        results[name] = {"refused": not done,
                         "detail": ("DONE: " + ", ".join(done)) if done else "; ".join(errors)}

    def reader(path):
        return lambda: open(path, "rb").read()

    def lister(path):
        return lambda: os.listdir(path)

    attempt("stack_files", [(p, reader(p)) for p in targets["stack_files"]])
    attempt("environ", [(f"{n} ({pid})", reader(f"/proc/{pid}/environ"))
                        for n, pid in targets["pids"].items()])
    attempt("other_files", [(p, lister(p) if not p.endswith(".txt") else reader(p))
                            for p in targets["other_files"]])
    attempt("other_log", [(targets["other_log"], reader(targets["other_log"]))])

    # Everything else this code can read of other processes' environments: the caller
    # looks for secrets in it.
    readable: dict[str, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                readable[entry] = open(f"/proc/{entry}/environ", "rb").read().decode(
                    "utf-8", "replace")
            except OSError:
                pass
    candidates = {"forged": "x" * 43}
    for text in readable.values():
        for var in text.split("\0"):
            if var.startswith("ZEXEC_SERVER_CREDENTIAL="):
                candidates[f"found in an environ: {var[:30]}..."] = var.split("=", 1)[1]

    import zmq

    from zexec.core import protocol as p

    def register(user_id: str, credential: str) -> bool:
        ctx = zmq.Context.instance()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVTIMEO, 5000)
        try:
            s.connect(targets["backend"])
            info = {"python": "3", "workers": 1, "pid": os.getpid(), "direct": False}
            s.send_multipart(p.register(user_id, credential, info))
            while True:
                frames = s.recv_multipart()
                if len(frames) >= 4 and frames[2] == p.REGISTER_ACK:
                    ok = bool(p.load_header(frames[3]).get("ok"))
                    if ok:
                        s.send_multipart([b"", p.MAGIC, p.BYE])
                    return ok
        except zmq.Again:
            return False
        finally:
            s.close()

    control_id, control_credential = targets["control"]
    control = register(control_id, control_credential)
    taken = [label for label, cred in candidates.items()
             if register(targets["other_user_id"], cred)]
    results["register"] = {
        "refused": control and not taken,
        "detail": (f"DONE with {taken}" if taken else
                   f"refused with {len(candidates)} credential(s): {', '.join(candidates)}")
        + ("" if control else "; CONTROL FAILED: the probe could not register at all"),
    }

    def kill(pid: int, sig: int):
        return lambda: os.kill(pid, sig)

    # SIGKILL for bob's server; the stack's processes get signal 0, which performs the
    # same permission check without harm (this code's answer has to come back through
    # them when the stack cannot stop it).
    sigs = {name: signal.SIGKILL if name == "bob's server" else 0 for name in targets["pids"]}
    attempt("signal", [(f"{n} ({pid}, signal {sigs[n]})", kill(pid, sigs[n]))
                       for n, pid in targets["pids"].items()])
    return {"results": results, "readable_environ": readable, "control_registered": control}


def table(results: dict[str, dict[str, Any]]) -> str:
    """The probes as a markdown table."""
    rows = ["| probe | what alice's code tried | refused | detail |", "| --- | --- | --- | --- |"]
    for name, what in PROBES.items():
        r = results.get(name, {"refused": None, "detail": "not run"})
        verdict = {True: "yes", False: "**NO**", None: "-"}[r["refused"]]
        rows.append(f"| {name} | {what} | {verdict} | {r['detail']} |")
    return "\n".join(rows)


def plant():
    """Run as bob: a file of his, readable by all (0644): only its directory may keep it
    private. Returns (his working directory, his uid)."""
    import os

    with open("secret.txt", "w") as f:
        f.write("bob's private data")
    os.chmod("secret.txt", 0o644)
    return os.getcwd(), os.getuid()


def _first(state: Path, *names: str) -> Path:
    """The first of ``names`` under ``state`` that exists (layouts of zexec before and
    after ``secrets/``), else the first."""
    return next((state / n for n in names if (state / n).exists()), state / names[0])


def stack_secrets(state: Path, stack: dict[str, Any]) -> list[str]:
    """Every secret of a ``zexec up`` stack: server secret, admin token, TLS key,
    the users' tokens and server credentials."""
    from zexec.core.protocol import server_credential

    files = [_first(state, "secrets/ZEXEC_BROKER_SERVER_SECRET", "server_secret"),
             _first(state, "secrets/ZEXEC_BROKER_ADMIN_TOKEN", "admin_token"),
             _first(state, "secrets/broker_tls.key", "broker_tls.key")]
    values = [f.read_text().strip() for f in files if f.exists()]
    secret = values[0].encode()
    return [*values, *stack["tokens"].values(),
            *(server_credential(secret, uid) for uid in stack["users"].values())]


def targets(state: Path, stack: dict[str, Any], bob_dir: str, bob_pid: int) -> dict[str, Any]:
    """What alice's code aims at on the ``zexec up`` stack in ``state`` (see
    :func:`probe_all`), as the operator knows it."""
    from zexec.core.protocol import server_credential

    secret = _first(state, "secrets/ZEXEC_BROKER_SERVER_SECRET", "server_secret")
    control_id = f"probe-control-{uuid.uuid4().hex[:8]}"
    return {
        "stack_files": [str(p) for p in (
            state / "stack.json", state / "tokens.json", secret,
            _first(state, "secrets/ZEXEC_BROKER_ADMIN_TOKEN", "admin_token"),
            _first(state, "secrets/broker_tls.key", "broker_tls.key"))],
        "pids": {"bob's server": bob_pid, "broker": stack["components"]["broker"]["pid"],
                 "web": stack["components"]["web"]["pid"]},
        "other_files": [bob_dir, f"{bob_dir}/secret.txt"],
        "other_log": str(state / "orchestrator" / "logs" / f"{stack['users']['bob']}.log"),
        "backend": f"tcp://127.0.0.1:{stack['broker_backend_port']}",
        "other_user_id": stack["users"]["bob"],
        "control": (control_id,
                    server_credential(secret.read_text().strip().encode(), control_id)),
    }


def leaks(got: dict[str, Any], secrets: list[str]) -> dict[str, int]:
    """``{pid: how many secrets}`` of the environments alice's code could read."""
    out = {}
    for pid, text in got["readable_environ"].items():
        n = sum(1 for v in secrets if v and v in text)
        if n:
            out[pid] = n
    return out


def load_stack(state: Path) -> dict[str, Any]:
    return json.loads((state / "stack.json").read_text())
