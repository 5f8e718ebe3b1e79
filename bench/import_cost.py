"""Start-up import cost of zexec's programs, this tree against another, in the same run.

    git archive <commit> | tar -x -C /tmp/base      # the tree to compare with
    .venv/bin/python bench/import_cost.py --src /tmp/base/src [--rounds 15]

Each round imports every module in a fresh interpreter with ``python -X importtime``,
alternating the two trees (so load on the machine hits both alike), and the table gives
the median over the rounds of: the module's whole import (everything it pulls in), and
the self time summed over zexec's own modules. A benchmark, not a test: no target.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

MODULES = ("zexec.apps.broker.app", "zexec.apps.server.app", "zexec.apps.server.worker",
           "zexec")
HERE = Path(__file__).resolve().parents[1] / "src"


def measure(module: str, src: Path) -> tuple[int, int, int]:
    """(whole import, zexec's own self time, zexec modules) in microseconds."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                         env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True,
                         text=True, check=True).stderr
    whole = own = count = 0
    for line in err.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = (x.strip() for x in line[len("import time:"):].split("|"))
        if name == module:
            whole = int(cum_us)
        if name.startswith("zexec"):
            own, count = own + int(self_us), count + 1
    return whole, own, count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, help="the other tree's src/ directory")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    trees = {"other": Path(args.src).resolve(), "this": HERE}
    runs: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for _ in range(args.rounds):
        for module in MODULES:
            for name, src in trees.items():
                runs.setdefault((name, module), []).append(measure(module, src))
    print("| module | tree | import, ms (median) | zexec's own modules, ms | modules |")
    print("|---|---|---|---|---|")
    for module in MODULES:
        for name in trees:
            rows = runs[(name, module)]
            whole = statistics.median(r[0] for r in rows) / 1000
            own = statistics.median(r[1] for r in rows) / 1000
            print(f"| {module} | {name} | {whole:.1f} | {own:.1f} | {rows[0][2]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
