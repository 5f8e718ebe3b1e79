"""What isolating users costs: spawn time and first-call latency of a user's server under
each isolation mode of the local orchestrator, side by side in one run.

    .venv/bin/python bench/isolation_cost.py [--rounds 10]

One real broker (``tests/helpers/stack.py``, static tokens), one local orchestrator per
mode (``none``; ``uid`` and ``uid+sandbox`` as root; ``sandbox`` when not root), each with
its own state directory whose environment (``python==X.Y`` + this zexec) is built once,
untimed, before the rounds. Every round, for each mode in turn (interleaved, so drift in
the machine's load hits every mode alike):

* **spawn**: ``ensure()`` until the server is ``ready`` (registered with the broker; the
  status is polled every 5 ms, as a client polling fast would);
* **first call**: the first ``pow(2, 10)`` on the fresh server, from a client connected
  before the spawn (the server's first worker is warm or warming);
* **warm call**: the median of the next 20 calls (the floor: what isolation costs per call
  once running, expected to be nothing);
* **8 MB echo**: the median of 5 round trips of an 8 MB numpy array (out-of-band frames).

Then ``terminate()`` (untimed). Prints medians, p90 and the ratio to ``none`` per column,
and writes ``bench/results/isolation-<timestamp>.json`` with every sample. Not a test:
asserts nothing. Needs root for the uid modes; the environment is built from an
interpreter other uids can reach (``/usr/bin/python3.X`` for this X.Y when the running one
lives under a closed directory such as ``/root``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

from common import percentile  # noqa: E402

from tests.helpers.stack import SECRET, Stack  # noqa: E402
from zexec import Client  # noqa: E402
from zexec.adapters.orchestrator_local import LocalOrchestrator  # noqa: E402
from zexec.adapters.orchestrator_local.isolation import (  # noqa: E402
    Isolation,
    bwrap_problem,
    resolve,
    unreachable,
)
from zexec.adapters.orchestrator_local.pythons import running_python  # noqa: E402
from zexec.apps.devidp.tokens import user_id_for  # noqa: E402
from zexec.core.envspec import parse_env_spec  # noqa: E402
from zexec.core.model import UserIdentity  # noqa: E402

PY = "{}.{}".format(*sys.version_info[:2])


def interpreter() -> str:
    """This X.Y, from a place other uids can reach."""
    here = running_python()[1]
    if not unreachable([here]):
        return here
    for d in ("/usr/bin", "/usr/local/bin"):
        exe = Path(d) / f"python{PY}"
        if exe.exists() and not unreachable([exe]):
            return str(exe)
    return here  # the uid-only mode will report that it cannot run


def modes() -> dict[str, Isolation]:
    out = {"none": Isolation.off()}
    bwrap = shutil.which("bwrap")
    sandbox_ok = bwrap is not None and bwrap_problem(bwrap) is None
    if os.geteuid() == 0:
        out["uid"] = resolve("uid")
        if sandbox_ok:
            out["uid+sandbox"] = resolve("uid+sandbox")
            out["sandbox"] = resolve("sandbox")  # as a non-root stack runs it
    elif sandbox_ok:
        out["sandbox"] = resolve("sandbox")
    return out


def _echo(x):
    return x


def wait_ready(orch: LocalOrchestrator, user_id: str) -> None:
    deadline = time.monotonic() + 600
    while True:
        st = orch.status(user_id)
        if st is not None and st.phase == "ready":
            return
        if st is not None and st.phase in ("failed", "terminated"):
            raise RuntimeError(f"{st.phase}: {st.reason}\n" + "\n".join(st.log_tail))
        if time.monotonic() > deadline:
            raise TimeoutError("server not ready")
        time.sleep(0.005)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    top = Path(tempfile.mkdtemp(prefix="zexec-isolation-bench-"))
    top.chmod(0o711)
    stack = Stack(top / "broker")
    (top / "broker").mkdir(exist_ok=True)
    orchs: dict[str, LocalOrchestrator] = {}
    samples: dict[str, dict[str, list[float]]] = {}
    user = UserIdentity(user_id_for("alice"), "alice")
    spec = parse_env_spec([f"python=={PY}", "numpy"])
    try:
        stack.start_broker()
        for name, iso in modes().items():
            orchs[name] = LocalOrchestrator(
                top / name, stack.backend, SECRET.encode(), {PY: interpreter()},
                isolation=iso, users_dir=top / name / "users",
            )
            samples[name] = {"spawn": [], "first": [], "warm": [], "echo": []}
            print(f"building the environment for {name} ...", file=sys.stderr)
            orchs[name].ensure(user, spec)
            wait_ready(orchs[name], user.user_id)
            orchs[name].terminate(user.user_id)
        import numpy as np

        array = np.random.default_rng(0).random(1_000_000)  # 8 MB
        with Client(stack.frontend, stack.tokens["alice"]) as client:
            for r in range(args.rounds):
                for name, orch in orchs.items():
                    t0 = time.perf_counter()
                    orch.ensure(user, spec)
                    wait_ready(orch, user.user_id)
                    t1 = time.perf_counter()
                    assert client.call(pow, 2, 10) == 1024
                    t2 = time.perf_counter()
                    warm = []
                    for _ in range(20):
                        t = time.perf_counter()
                        client.call(pow, 2, 10)
                        warm.append(time.perf_counter() - t)
                    echo = []
                    for _ in range(5):
                        t = time.perf_counter()
                        client.call(_echo, array)
                        echo.append(time.perf_counter() - t)
                    orch.terminate(user.user_id)
                    samples[name]["echo"].append(statistics.median(echo))
                    samples[name]["spawn"].append(t1 - t0)
                    samples[name]["first"].append(t2 - t1)
                    samples[name]["warm"].append(statistics.median(warm))
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for orch in orchs.values():
            orch.close()
        stack.close()
        shutil.rmtree(top, ignore_errors=True)
    print(report(samples, args.rounds))
    out = ROOT / "bench" / "results" / f"isolation-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": args.rounds, "python": PY, "samples": samples,
                               "cpus": os.cpu_count()}, indent=1))
    print(f"\nsamples: {out}", file=sys.stderr)
    return 0


def report(samples: dict[str, dict[str, list[float]]], rounds: int) -> str:
    rows = [f"isolation cost, {rounds} rounds, medians (p90) in ms; ratio to `none`", "",
            "| mode | spawn to ready | ratio | first call | ratio | warm call | ratio | 8 MB echo "
            "| ratio |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = {k: statistics.median(v) for k, v in samples["none"].items()}
    for name, cols in samples.items():
        cells = []
        for key in ("spawn", "first", "warm", "echo"):
            s = sorted(cols[key])
            med = statistics.median(s)
            cells += [f"{med * 1e3:.1f} ({percentile(s, 90) * 1e3:.1f})",
                      f"{med / base[key]:.2f}"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
