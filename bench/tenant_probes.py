"""The tenant probe table of a running ``zexec up`` stack: what alice's remote code can do
to bob and to the stack (the attacks of issue 9, ``tests/helpers/tenant_probes.py``).

    .venv/bin/python bench/tenant_probes.py --state-dir DIR

Connects alice and bob (tokens from ``DIR/stack.json``), gives bob a server and a file,
runs every probe as alice's remote code, and prints a markdown table (plus which
environments alice could read that hold a secret). It reads the stack's secrets as the
operator (to look for them and to know bob's pid), so run it as the stack's user. Works
against a stack of zexec before isolation too (the layout of its state directory is
recognised), which is how the "before" table of the issue is made: run ``zexec up`` of
that version, then this script with this checkout's interpreter. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cloudpickle  # noqa: E402

import tests.helpers.tenant_probes as tp  # noqa: E402
import zexec  # noqa: E402


def bob_pid(state: Path, bob) -> int:
    """Bob's server as this machine's pid namespace sees it: the orchestrator's record
    (``zexec status``), else the parent of his worker (no sandbox before isolation)."""
    status = subprocess.run([sys.executable, "-m", "zexec.apps.cli", "status", "--json",
                             "--state-dir", str(state)], capture_output=True, text=True)
    rows = {r["user"]: r for r in json.loads(status.stdout)["servers"]}
    pid = rows.get("bob", {}).get("pid")
    return int(pid) if pid else bob.client.call(os.getppid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state-dir", required=True, type=Path)
    args = ap.parse_args()
    state = args.state_dir.resolve()
    stack = tp.load_stack(state)
    py = "python=={}.{}".format(*sys.version_info[:2])
    cloudpickle.register_pickle_by_value(tp)
    conns = {}
    try:
        for user in ("bob", "alice"):
            conns[user] = zexec.connect(stack["ep_api_url"], stack["tokens"][user])
            conns[user].environment([py], progress=False, timeout=600)
        bob_dir, _ = conns["bob"].client.call(tp.plant)
        targets = tp.targets(state, stack, bob_dir, bob_pid(state, conns["bob"]))
        got = conns["alice"].client.call(tp.probe_all, targets)
    finally:
        for c in conns.values():
            c.close()
    mode = (stack.get("isolation") or {}).get("mode", "(not recorded: zexec before isolation)")
    print(f"isolation: {mode}\n")
    print(tp.table(got["results"]))
    leaked = tp.leaks(got, tp.stack_secrets(state, stack))
    print(f"\nenvironments alice read that hold a secret: "
          f"{', '.join(f'pid {p}: {n}' for p, n in leaked.items()) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
