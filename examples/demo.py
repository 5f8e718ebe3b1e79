"""A short tour of zexec against the stack ``zexec up`` started on this machine.

    python examples/demo.py [STACK]     (STACK: a stack.json, or the --state-dir of zexec up)

Without STACK it uses the first stack.json found in ``$ZEXEC_STATE_DIR``, ``./.state``,
the repository's ``.state`` (``scripts/demo.sh``) and ``~/.zexec`` (``zexec up``'s default).

Connects as the development user alice, asks for a server running this interpreter's
Python with numpy, runs a few remote calls, then terminates the server. Each function
below runs in alice's server process, not here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import zexec


@zexec.remote
def where() -> str:
    import os
    import platform

    return f"pid {os.getpid()} on {platform.node()}, Python {platform.python_version()}"


@zexec.remote
def add(a: int, b: int) -> int:
    return a + b


@zexec.remote
def countdown(n: int) -> str:
    for i in range(n, 0, -1):
        print(f"  [remote] {i}...", flush=True)  # shown here while the call runs
        time.sleep(0.3)
    return "liftoff"


@zexec.remote
def squares(n: int):
    for i in range(n):
        yield i * i


@zexec.remote
def divide(a: float, b: float) -> float:
    return a / b


@zexec.remote
def scale(a: np.ndarray, k: float) -> np.ndarray:
    return a * k


def find_stack(arg: str | None) -> Path:
    """The stack.json to use (see the module doc); exits with a message if there is none."""
    if arg:
        given = Path(arg).expanduser()
        candidates = [given / "stack.json" if given.is_dir() else given]
    else:
        dirs = [os.environ.get("ZEXEC_STATE_DIR"), ".state",
                Path(__file__).resolve().parents[1] / ".state", "~/.zexec"]
        candidates = [Path(d).expanduser() / "stack.json" for d in dirs if d]
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    sys.exit(f"demo.py: no stack.json ({looked}); start the stack with `zexec up "
             "--state-dir DIR` and run: python examples/demo.py DIR/stack.json")


def main() -> None:
    stack = json.loads(find_stack(sys.argv[1] if len(sys.argv) > 1 else None).read_text())
    python = f"{sys.version_info.major}.{sys.version_info.minor}"

    print(f"== connecting to {stack['ep_api_url']} as alice")
    conn = zexec.connect(stack["ep_api_url"], stack["tokens"]["alice"])
    print(f"   {conn}")
    print(f"== environment: python=={python} + numpy (built once, then reused)")
    conn.environment([f"python=={python}", "numpy"])
    try:
        print(f"== where does it run?      {where()}")
        print(f"== a return value          add(2, 3) = {add(2, 3)}")
        print("== live output             countdown(3):")
        print(f"   -> {countdown(3)}")
        print(f"== a generator             squares(6) -> {list(squares(6))}")
        try:
            divide(1, 0)
        except ZeroDivisionError as exc:
            print(f"== a remote exception      divide(1, 0) raised ZeroDivisionError: {exc}")
        a = np.random.default_rng(0).random((1000, 1000))
        t = time.perf_counter()
        b = scale(a, 2.0)
        ms = (time.perf_counter() - t) * 1000
        ok = np.array_equal(b, a * 2.0)
        print(
            f"== numpy round trip        {a.nbytes / 1e6:.0f} MB there and back in {ms:.0f} ms,"
            f" equal: {ok}"
        )
        print(
            f"== .map                    add.map(range(5), range(5)) -> "
            f"{list(add.map(range(5), range(5)))}"
        )
    finally:
        print(f"== terminate               {conn.terminate()['message']}")
        conn.close()


if __name__ == "__main__":
    main()
