"""Cold start: `zexec up`, spawn to first result (cached and new environment), vs Dask
LocalCluster and Ray, side by side in one run.

    .venv/bin/python bench/spawn_bench.py [--reps 3] [--sides zexec,dask,ray]

What is timed (each repetition in fresh processes; medians of ``--reps``):

(a) ``zexec up --state-dir D``: wall time of the command (it returns once every component
    answers its health check).
(b) spawn to first result, cached environment, including (a): after ``zexec down`` and
    ``zexec up``, a fresh Python process (the project's .venv) times
    ``zexec.connect(ep, token)`` + ``.environment([python==X.Y])`` + the first remote
    call's result. The environment was built once before the repetitions (the warm-up);
    the total is (a) + that time. Interpreter start and ``import zexec`` are not counted
    (reported apart), as for Dask and Ray.
(c) spawn to first result, NEW environment: on the running stack, alice's server is
    terminated (not timed), then ``connect`` + ``environment([python==X.Y, six==V])`` with
    a six version not used before in this run's state dir (a new digest: uv builds a venv)
    + the first call (which imports six remotely and returns its version). uv's cache is
    whatever it is on this machine (wheels already cached make downloads cheap).
(d) Dask: ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
    dashboard_address=None)`` + ``Client`` + first ``submit().result()``, in
    ``bench/.venv-dask`` (``dask[distributed]``); Ray: ``ray.init(num_cpus=2,
    include_dashboard=False)`` + first ``ray.get(f.remote())``, in ``bench/.venv-ray``.
    Both venvs are created with uv when missing. Imports are not counted.

Every side gets one untimed warm-up run first (zexec: `up` + the first environment
build). The children run without ``PYTHONDONTWRITEBYTECODE`` (``--no-bytecode-cache``
keeps it) so their bytecode caches exist after the warm-up, as after a pip install.
Repetitions are interleaved (zexec, Dask, Ray, zexec, ...) so drift in the machine's load
hits every side alike. The state dir is a fresh temporary directory (removed at the end
unless ``--keep-state``). Every process the run starts carries ``BENCH_RUN_ID`` in its
environment; at the end (also after an error or Ctrl-C) ``zexec down`` runs and anything
still carrying the id is killed by pid. Prints a markdown table; writes
``bench/results/spawn-<timestamp>.json`` with every sample. Not a test: asserts nothing.

The same file is the side runner (``--side zexec|dask|ray``): stdlib only at module level,
so it runs under any of the venvs' interpreters.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
import harness  # noqa: E402

MARK = "@@SPAWN_JSON@@ "
PY_XY = f"{sys.version_info[0]}.{sys.version_info[1]}"
SIX_VERSIONS = ["1.17.0", "1.16.0", "1.15.0", "1.14.0", "1.13.0", "1.12.0", "1.11.0"]
VENVS = {
    "dask": (BENCH / ".venv-dask", ["dask[distributed]"], "import dask.distributed"),
    "ray": (BENCH / ".venv-ray", ["ray", "numpy"], "import ray"),
}
REFERENCE = {"dask": 1.5, "ray": 4.5}  # issue 3: measured on the issue author's machine
TARGET_CACHED_S = 2.0
SIDE_TIMEOUT = {"zexec": 900.0, "dask": 180.0, "ray": 300.0}
RUN_ID = os.environ.setdefault("BENCH_RUN_ID", uuid.uuid4().hex)


# --------------------------------------------------------------------------- sides


def _emit(doc: dict) -> None:
    sys.__stdout__.write(MARK + json.dumps(doc) + "\n")
    sys.__stdout__.flush()


def probe(module: str | None):
    """The first remote call: the worker's pid and, if asked, a module's version."""
    import importlib
    import os

    mod = importlib.import_module(module) if module else None
    return os.getpid(), getattr(mod, "__version__", None)


def side_zexec(args: argparse.Namespace) -> None:
    clock = time.perf_counter
    t = clock()
    import zexec

    zexec.connect, zexec.Client  # noqa: B018  (the SDK's modules load on first use)
    import_s = clock() - t
    reqs = [f"python=={PY_XY}", *args.req]
    if args.terminate_first:  # not timed: start from "no server"
        with zexec.connect(args.ep, args.token) as c:
            c.terminate()
    t0 = clock()
    conn = zexec.connect(args.ep, args.token)
    t1 = clock()
    st = conn.environment(reqs, progress=False, timeout=SIDE_TIMEOUT["zexec"])
    t2 = clock()
    value = conn.client.call(probe, args.module)
    t3 = clock()
    conn.close()
    _emit(
        {
            "import_s": import_s,
            "connect_s": t1 - t0,
            "environment_s": t2 - t1,
            "first_call_s": t3 - t2,
            "total_s": t3 - t0,
            "value": list(value),
            "digest": st["env"]["digest"],
        }
    )


def _inc(x):
    return x + 1


def side_dask(args: argparse.Namespace) -> None:
    clock = time.perf_counter
    t = clock()
    import dask
    from dask.distributed import Client, LocalCluster

    import_s = clock() - t
    t0 = clock()
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    t1 = clock()
    client = Client(cluster)
    t2 = clock()
    value = client.submit(_inc, 1).result()
    t3 = clock()
    client.close()
    cluster.close()
    _emit(
        {
            "import_s": import_s,
            "cluster_s": t1 - t0,
            "client_s": t2 - t1,
            "first_call_s": t3 - t2,
            "total_s": t3 - t0,
            "value": value,
            "version": dask.__version__,
        }
    )


def side_ray(args: argparse.Namespace) -> None:
    clock = time.perf_counter
    t = clock()
    import ray

    import_s = clock() - t
    inc = ray.remote(_inc)
    t0 = clock()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t1 = clock()
    value = ray.get(inc.remote(1))
    t2 = clock()
    ray.shutdown()
    _emit(
        {
            "import_s": import_s,
            "init_s": t1 - t0,
            "first_call_s": t2 - t1,
            "total_s": t2 - t0,
            "value": value,
            "version": ray.__version__,
        }
    )


# --------------------------------------------------------------------------- harness


def say(msg: str) -> None:
    print(f"[spawn-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_venv(name: str, install: bool) -> Path:
    venv, packages, check = VENVS[name]
    return harness.ensure_venv(venv, packages, check, install=install, say=say)


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_side(
    python: str,
    side: str,
    extra: list[str],
    logdir: Path,
    env: dict | None = None,
    timeout: float | None = None,
) -> dict:
    """Run this file as ``--side SIDE`` under ``python``; return its JSON line."""
    cmd = [python, str(Path(__file__).resolve()), "--side", side, *extra]
    log = logdir / f"{side}-side.log"
    with open(log, "ab") as err:
        err.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
        err.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=REPO,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        try:
            out, _ = proc.communicate(timeout=timeout or SIDE_TIMEOUT[side])
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{side} side timed out; see {log}") from exc
        finally:
            if proc.poll() is None:
                kill_group(proc.pid)
                proc.wait(10)
            else:
                kill_group(proc.pid)  # whatever it left in its group (Ray's helpers)
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{side} side exited {proc.returncode} without results:\n{tail}")


ZEXEC = [str(REPO / ".venv" / "bin" / "zexec")]


def zexec_cli(*args: str, state: Path, timeout: float = 300) -> tuple[float, str]:
    """Run ``zexec ARGS --state-dir state``; return (wall seconds, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*ZEXEC, *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"zexec {args[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return took, proc.stdout


def sweep() -> list[int]:
    return harness.sweep(RUN_ID)


def summary(values: list[float]) -> dict | None:
    if not values:
        return None
    return {
        "n": len(values),
        "median_s": statistics.median(values),
        "min_s": min(values),
        "max_s": max(values),
        "samples_s": values,
    }


def git_info() -> dict:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty_zexec": bool(git("status", "--porcelain", "--", "src")),
    }


def zexec_rep(state: Path, logdir: Path, rep: int, six: str | None, raw: dict) -> None:
    """One repetition of (a), (b) and (c): down, up, cached spawn, new-env spawn."""
    up_s, _ = zexec_cli("up", state=state)
    stack = json.loads((state / "stack.json").read_text())
    # "--token=T": a token may start with "-", which argparse would take for an option.
    base = ["--ep", stack["ep_api_url"], f"--token={stack['tokens']['alice']}"]
    cached = run_side(sys.executable, "zexec", base, logdir)
    cached["up_s"] = up_s
    cached["total_with_up_s"] = up_s + cached["total_s"]
    raw["zexec_cached"].append(cached)
    say(
        f"zexec #{rep}: up {up_s:.2f} s + spawn->result {cached['total_s']:.2f} s "
        f"(environment {cached['environment_s']:.2f} s)"
    )
    if six is not None:
        new = run_side(
            sys.executable,
            "zexec",
            [*base, "--req", f"six=={six}", "--module", "six", "--terminate-first"],
            logdir,
        )
        if new["value"][1] != six:
            raise RuntimeError(f"the new environment runs six {new['value'][1]}, not {six}")
        raw["zexec_new"].append(new)
        say(f"zexec #{rep}: new env (six=={six}) spawn->result {new['total_s']:.2f} s")
    down_s, _ = zexec_cli("down", state=state)
    raw["down_s"].append(down_s)


def run(args: argparse.Namespace) -> dict:
    sides = [s for s in args.sides.split(",") if s]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir = Path(args.results_dir)
    logdir = results_dir / f"spawn-{stamp}-logs"
    logdir.mkdir(parents=True, exist_ok=True)
    state = Path(tempfile.mkdtemp(prefix="zexec-spawn-bench-")) / "state"
    doc: dict = {
        "timestamp": stamp,
        "command": " ".join([".venv/bin/python bench/spawn_bench.py", *sys.argv[1:]]),
        "host": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
        },
        "git": git_info(),
        "reps": args.reps,
        "state_dir": str(state),
        "errors": {},
        "raw": {"zexec_cached": [], "zexec_new": [], "down_s": [], "dask": [], "ray": []},
    }
    raw = doc["raw"]
    doc["bytecode"] = {
        "PYTHONDONTWRITEBYTECODE_in_env": bool(os.environ.get("PYTHONDONTWRITEBYTECODE")),
        "caches_written": args.bytecode_cache,
    }
    if args.bytecode_cache:
        # Let every process this run starts write __pycache__ (the warm-up fills them), as
        # on a machine where pip compiled at install time; else each start recompiles
        # every imported module from source (FastAPI, pydantic, Dask, Ray ...).
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    pys = {}
    for name in ("dask", "ray"):
        if name in sides:
            try:
                pys[name] = str(ensure_venv(name, install=not args.no_install))
            except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
                say(f"{name}: cannot set up its venv, skipping: {exc}")
                doc["errors"][name] = f"venv: {exc}"
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        say(
            f"WARNING: load average {load:.1f} on {os.cpu_count()} CPUs before the run: "
            "something else is busy, expect noisy numbers"
        )
    t_start = time.monotonic()
    try:
        if "zexec" in sides:
            say(f"warm-up: zexec up in a fresh state dir + first build of python=={PY_XY}")
            first_up, _ = zexec_cli("up", state=state)
            stack = json.loads((state / "stack.json").read_text())
            build = run_side(
                sys.executable,
                "zexec",
                ["--ep", stack["ep_api_url"], f"--token={stack['tokens']['alice']}"],
                logdir,
            )
            doc["warmup"] = {"first_up_s": first_up, "first_build": build}
            say(f"warm-up: up {first_up:.2f} s, env built + first result {build['total_s']:.2f} s")
            zexec_cli("down", state=state)
        for name in list(pys):  # the same untimed first run for the others
            say(f"warm-up: {name}")
            try:
                r = run_side(pys[name], name, [], logdir, env={"RAY_USAGE_STATS_ENABLED": "0"})
                doc.setdefault("warmup", {})[name] = r
            except RuntimeError as exc:
                say(f"{name} warm-up failed, skipping it: {exc}")
                doc["errors"][name] = str(exc)
                del pys[name]
        for rep in range(1, args.reps + 1):
            if "zexec" in sides:
                six = SIX_VERSIONS[rep - 1] if args.new_env else None
                zexec_rep(state, logdir, rep, six, raw)
            for name in ("dask", "ray"):
                if name in pys:
                    try:
                        r = run_side(
                            pys[name], name, [], logdir, env={"RAY_USAGE_STATS_ENABLED": "0"}
                        )
                    except RuntimeError as exc:
                        say(f"{name} #{rep} failed: {exc}")
                        doc["errors"][name] = str(exc)
                        continue
                    raw[name].append(r)
                    say(f"{name} #{rep}: start->first result {r['total_s']:.2f} s")
    finally:
        if (state / "stack.json").exists():
            try:
                zexec_cli("down", state=state)
            except (RuntimeError, subprocess.SubprocessError) as exc:
                say(f"zexec down failed: {exc}")
        left = sweep()
        if left:
            say(f"killed {len(left)} leftover process(es): {left}")
            doc["leftover_killed"] = left
        if not args.keep_state:
            shutil.rmtree(state.parent, ignore_errors=True)
        doc["elapsed_s"] = time.monotonic() - t_start
        doc["host"]["loadavg_at_end"] = os.getloadavg()

    zc, zn = raw["zexec_cached"], raw["zexec_new"]
    doc["summary"] = {
        "up": summary([r["up_s"] for r in zc]),
        "cached_with_up": summary([r["total_with_up_s"] for r in zc]),
        "cached": summary([r["total_s"] for r in zc]),
        "cached_environment": summary([r["environment_s"] for r in zc]),
        "new_env": summary([r["total_s"] for r in zn]),
        "down": summary(raw["down_s"]),
        "dask": summary([r["total_s"] for r in raw["dask"]]),
        "ray": summary([r["total_s"] for r in raw["ray"]]),
        "imports": {
            k: summary([r["import_s"] for r in v])
            for k, v in (("zexec", zc), ("dask", raw["dask"]), ("ray", raw["ray"]))
        },
    }
    out = results_dir / f"spawn-{stamp}.json"
    out.write_text(json.dumps(doc, indent=2))
    doc["json_path"] = str(out.relative_to(REPO) if out.is_relative_to(REPO) else out)
    return doc


def _s(x: dict | None) -> str:
    return "n/a" if not x else f"{x['median_s']:.2f}"


def _range(x: dict | None) -> str:
    return "" if not x else f"{x['min_s']:.2f}-{x['max_s']:.2f}"


def _ratio(other: dict | None, mine: dict | None) -> str:
    if not other or not mine or not mine["median_s"]:
        return ""
    r = other["median_s"] / mine["median_s"]
    return f"{r:.2f}x" if r < 1 else f"{r:.1f}x"


def markdown(doc: dict) -> str:
    s = doc["summary"]
    cw = s["cached_with_up"]
    hit = "" if not cw else (" (met)" if cw["median_s"] <= TARGET_CACHED_S else " (MISSED)")
    rows = [
        (
            "measurement",
            "median s",
            "min-max s",
            "target / issue's reference",
            "Dask / this",
            "Ray / this",
        ),
        (
            "(a) `zexec up` to ready (wall time of the command)",
            _s(s["up"]),
            _range(s["up"]),
            "",
            "",
            "",
        ),
        (
            "(b) spawn to first result, cached env, incl. `zexec up`",
            _s(cw),
            _range(cw),
            f"<= {TARGET_CACHED_S:g}{hit}",
            _ratio(s["dask"], cw),
            _ratio(s["ray"], cw),
        ),
        (
            "(b') same, stack already up (connect + environment + call)",
            _s(s["cached"]),
            _range(s["cached"]),
            "",
            _ratio(s["dask"], s["cached"]),
            _ratio(s["ray"], s["cached"]),
        ),
        (
            "(c) spawn to first result, new env (uv build, stack up)",
            _s(s["new_env"]),
            _range(s["new_env"]),
            "",
            _ratio(s["dask"], s["new_env"]),
            _ratio(s["ray"], s["new_env"]),
        ),
        (
            "(d) Dask LocalCluster + Client + first submit().result()",
            _s(s["dask"]),
            _range(s["dask"]),
            f"Dask {REFERENCE['dask']:g}",
            "",
            "",
        ),
        (
            "(d) Ray ray.init() + first remote call",
            _s(s["ray"]),
            _range(s["ray"]),
            f"Ray {REFERENCE['ray']:g}",
            "",
            "",
        ),
    ]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def notes(doc: dict) -> list[str]:
    s, raw, out = doc["summary"], doc["raw"], []
    zc = raw["zexec_cached"]
    if zc:
        parts = {
            k: statistics.median(r[k] for r in zc)
            for k in ("connect_s", "environment_s", "first_call_s")
        }
        out.append(
            f"(b) breakdown, medians: up {_s(s['up'])} s + connect "
            f"{parts['connect_s']:.2f} s + environment {parts['environment_s']:.2f} s "
            f"+ first call {parts['first_call_s']:.2f} s; the SDK polls the Deploy "
            "API every 50 ms for 3 s, then every 0.5 s, while the server starts"
        )
    w = doc.get("warmup")
    if w and "first_up_s" in w:
        out.append(
            f"warm-up (not in the table): first `zexec up` in a fresh state dir "
            f"{w['first_up_s']:.2f} s; first build of python=={PY_XY} + first result "
            f"{w['first_build']['total_s']:.2f} s"
        )
    if raw["zexec_new"]:
        out.append(
            "(c) used "
            + ", ".join(f"six=={r['value'][1]}" for r in raw["zexec_new"])
            + ", one new digest each; alice's previous server terminated first, not "
            "timed"
        )
    bc = doc["bytecode"]
    was_set = bc["PYTHONDONTWRITEBYTECODE_in_env"]
    if bc["caches_written"]:
        how = (
            "written by the warm-up (PYTHONDONTWRITEBYTECODE removed from the children's "
            "environment" + ("; it is set in this shell)" if was_set else ")")
        )
    else:
        how = "as found (PYTHONDONTWRITEBYTECODE " + (
            "set: every start recompiles its imports)" if was_set else "not set)"
        )
    out.append(f"bytecode caches: {how}; every side had one untimed warm-up run first")
    imp = s["imports"]
    out.append(
        "not counted anywhere: interpreter start and imports, medians: "
        + ", ".join(f"{k} {_s(v)} s" for k, v in imp.items() if v)
    )
    if s["down"]:
        out.append(f"`zexec down` (with alice's server running): median {_s(s['down'])} s")
    vers = [f"{k} {raw[k][0]['version']}" for k in ("dask", "ray") if raw[k]]
    if vers:
        out.append(
            "versions: " + ", ".join(vers) + "; Dask: 2 worker processes x 1 thread, "
            "no dashboard; Ray: num_cpus=2, no dashboard"
        )
    out.append("ratios: the other's median / this row's median (>1: zexec is faster)")
    la, lb = doc["host"]["loadavg_at_start"], doc["host"]["loadavg_at_end"]
    busy = (
        " (BUSY before the run: other work was running, numbers are noisy)"
        if la[0] > 0.5 * (doc["host"]["cpus"] or 1)
        else ""
    )
    out.append(
        f"1-min load average at start {la[0]:.2f}{busy}, at end {lb[0]:.2f} "
        f"(includes this run) on {doc['host']['cpus']} CPUs"
    )
    for k, v in doc["errors"].items():
        out.append(f"{k}: FAILED: {v.splitlines()[0] if v else v}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=3, help="repetitions (medians of these)")
    ap.add_argument("--sides", default="zexec,dask,ray", help="subset of zexec,dask,ray")
    ap.add_argument(
        "--no-new-env",
        dest="new_env",
        action="store_false",
        help="skip (c), the new-environment spawn",
    )
    ap.add_argument(
        "--no-install",
        action="store_true",
        help="fail instead of creating bench/.venv-dask / bench/.venv-ray",
    )
    ap.add_argument(
        "--no-bytecode-cache",
        dest="bytecode_cache",
        action="store_false",
        help="keep PYTHONDONTWRITEBYTECODE if set (every start recompiles)",
    )
    ap.add_argument("--keep-state", action="store_true", help="keep the temporary state dir")
    ap.add_argument("--results-dir", default=str(BENCH / "results"))
    ap.add_argument("--side", choices=["zexec", "dask", "ray"], help=argparse.SUPPRESS)
    ap.add_argument("--ep", help=argparse.SUPPRESS)
    ap.add_argument("--token", help=argparse.SUPPRESS)
    ap.add_argument("--req", action="append", default=[], help=argparse.SUPPRESS)
    ap.add_argument("--module", help=argparse.SUPPRESS)
    ap.add_argument("--terminate-first", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        {"zexec": side_zexec, "dask": side_dask, "ray": side_ray}[args.side](args)
        return 0
    if not 1 <= args.reps <= len(SIX_VERSIONS):
        ap.error(f"--reps must be 1-{len(SIX_VERSIONS)}")

    def on_term(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    doc = run(args)
    print(
        f"## spawn benchmark {doc['timestamp']} (commit {doc['git']['commit']}"
        f"{', src/ modified' if doc['git']['dirty_zexec'] else ''}; "
        f"{doc['host']['cpus']} CPUs; median of {args.reps}; {doc['elapsed_s']:.0f} s)\n"
    )
    print(markdown(doc))
    print()
    for line in notes(doc):
        print(f"- {line}")
    print(f"\nJSON: {doc['json_path']}")
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
