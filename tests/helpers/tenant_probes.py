"""What one tenant's remote code tries against another tenant and the stack: the attacks
of issue 9, each returning whether it was refused. ``probe_all`` runs as alice's remote
function (pickled by value: the servers cannot import ``tests``); the test (or
``bench/tenant_probes.py``) hands it the targets it knows as the operator, and checks
what came back for secrets itself.
"""

from __future__ import annotations

from typing import Any

#: Probe names in the order of the issue, with what each tries.
PROBES = {
    "stack_files": "read stack.json, tokens.json and the secrets of the state directory",
    "environ": "read /proc/<pid>/environ of the broker, the web process and bob's server",
    "other_files": "read and list bob's working directory",
    "other_log": "read bob's server log",
    "register": "register with the broker as bob's server (every credential found)",
    "signal": "signal bob's server, the broker and the web process",
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

    def kill(pid: int):
        return lambda: os.kill(pid, signal.SIGKILL)

    attempt("signal", [(f"{n} ({pid})", kill(pid)) for n, pid in targets["pids"].items()])
    return {"results": results, "readable_environ": readable, "control_registered": control}


def table(results: dict[str, dict[str, Any]]) -> str:
    """The probes as a markdown table."""
    rows = ["| probe | what alice's code tried | refused | detail |", "| --- | --- | --- | --- |"]
    for name, what in PROBES.items():
        r = results.get(name, {"refused": None, "detail": "not run"})
        verdict = {True: "yes", False: "**NO**", None: "-"}[r["refused"]]
        rows.append(f"| {name} | {what} | {verdict} | {r['detail']} |")
    return "\n".join(rows)
