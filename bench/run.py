"""zexec vs Ray (vs the released scidx-rexec client), side by side in one run.

    bash bench/run.sh [--quick] [--sides zexec,legacy,ray] [--path user,harness]

Two zexec paths, both by default, in one table: the **user path** (`zexec up` in a
temporary state directory with 2 workers per server, then `zexec.connect()` exactly as
the README does: plain on loopback, and again with `encrypt=True`, the TLS port a
remote broker gets) and the **harness** (a real broker and alice's server, 2 workers, as
subprocesses on loopback with static tokens: tests/helpers/stack.py, with the memory
runs). Beside them, the raw one-hop floors (bench/floors.py: pyzmq plain and CURVE, TLS
1.3 through Python's ssl) measured in the same run. Each side runs as a subprocess of its own
interpreter (the project's .venv, bench/.venv-ray, bench/.venv-legacy; the last two are
created with uv on first use), prints a markdown table and writes
bench/results/<timestamp>.json (logs beside it in <timestamp>-logs/). Every process it
started is killed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402
import report  # noqa: E402
from common import MIB, RESULT_MARKER, Sizes  # noqa: E402
from memory import PeakSampler, settle  # noqa: E402

RUN_ID = uuid.uuid4().hex
# Inherited by every process this run starts (Stack copies os.environ minus ZEXEC_*), so
# the final sweep can find each of them by pid, even those that left our process group.
os.environ["BENCH_RUN_ID"] = RUN_ID

VENVS = {
    "ray": (BENCH / ".venv-ray", ["ray", "numpy"], "import ray, numpy"),
    "legacy": (BENCH / ".venv-legacy", ["scidx-rexec==0.1.0", "numpy"],
               "import rexec.client_api, numpy"),
}
SIDE_TIMEOUT = {"zexec": 180, "legacy": 180, "ray": 300}


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_venv(name: str, install: bool) -> Path:
    venv, packages, check = VENVS[name]
    return harness.ensure_venv(venv, packages, check, install=install, say=say)


def run_side(name: str, cmd: list[str], logdir: Path, timeout: float) -> dict:
    """Run one side in its own session; return its JSON; kill it whatever happens."""
    errlog = logdir / f"{name}-side.log"
    with open(errlog, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=REPO,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{name} side timed out after {timeout}s; see {errlog}") from exc
        finally:
            if proc.poll() is None:
                kill_group(proc.pid)
                proc.wait(10)
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    tail = errlog.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{name} side exited {proc.returncode} without results:\n{tail}")


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def sweep() -> list[int]:
    return harness.sweep(RUN_ID)


def git_info() -> dict:
    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return r.stdout.strip()
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "dirty_zexec": bool(git("status", "--porcelain", "--", "src"))}


def user_phase(args, sizes: Sizes, logdir: Path) -> dict:
    """``zexec up`` + ``zexec.connect()``: plain (loopback) and encrypted (TLS)."""
    import shutil
    import tempfile

    state = Path(tempfile.mkdtemp(prefix="zexec-bench-up."))
    cli = str(Path(sys.executable).with_name("zexec"))
    env = {**os.environ, "ZEXEC_DEPLOY_SERVER_WORKERS": "2"}
    results: dict = {}
    say("user path: zexec up (2 workers per server)")
    with open(logdir / "zexec-up.log", "ab") as log:
        subprocess.run([cli, "up", "--state-dir", str(state)], check=True, env=env,
                       stdout=log, stderr=log, timeout=300)
    try:
        info = json.loads((state / "stack.json").read_text())
        base = [sys.executable, str(BENCH / "zexec_side.py"), "--ep-url", info["ep_api_url"],
                f"--token={info['tokens']['alice']}", "--serializer", args.serializer,
                "--sizes", sizes.to_json()]
        for key, extra in (("zexec_user", []), ("zexec_user_tls", ["--encrypt"])):
            say(f"user path: timed workloads ({'TLS' if extra else 'as connect() picks'})")
            results[key] = run_side(key, base + extra, logdir, SIDE_TIMEOUT["zexec"] + 120)
    finally:
        subprocess.run([cli, "down", "--state-dir", str(state)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
    return results


def zexec_phase(args, sizes: Sizes, legacy_py: Path | None, logdir: Path) -> dict:
    from tests.helpers.stack import Stack

    results: dict = {}
    payload = sizes.payload_mib * MIB
    stack = Stack(logdir)
    try:
        say("starting broker and alice's server (2 workers)")
        stack.start_broker()
        stack.start_server("alice", workers=2)
        broker_pid, server_pid = stack.broker.pid, stack.servers["alice"].pid
        token = stack.tokens["alice"]
        zcmd = [sys.executable, str(BENCH / "zexec_side.py"), "--broker", stack.frontend,
                f"--token={token}", "--serializer", args.serializer]
        host, port = stack.frontend.removeprefix("tcp://").rsplit(":", 1)
        lsizes = Sizes(warmup=min(sizes.warmup, 50), calls=min(sizes.calls, 500),
                       pipelined=0, payload_mib=sizes.payload_mib,
                       payload_reps=min(sizes.payload_reps, 3), lines=sizes.lines,
                       lines_reps=min(sizes.lines_reps, 3))
        lcmd = None if legacy_py is None else [
            str(legacy_py), str(BENCH / "legacy_side.py"), "--host", host, "--port", port,
            f"--token={token}"]

        # Memory first, on the fresh stack (pool warmed by one call, RSS settled); then
        # the timed workloads.
        run_side("zexec-warm", zcmd + ["--sizes", sizes.to_json(), "--workloads", "warm"],
                 logdir, SIDE_TIMEOUT["zexec"])
        if not settle(broker_pid, server_pid):
            say("memory did not settle within 10 s; baseline may be off")
        say(f"zexec: peak memory while moving {sizes.payload_mib} MiB")
        with PeakSampler(broker_pid, server_pid) as ps:
            run_side("zexec-memory", zcmd + ["--sizes", sizes.to_json(),
                                             "--workloads", "memory"], logdir,
                     SIDE_TIMEOUT["zexec"])
        zmem = ps.report(payload)
        lmem = None
        if lcmd:
            say(f"legacy: peak memory while moving {sizes.payload_mib} MiB")
            try:
                with PeakSampler(broker_pid, server_pid) as ps:
                    run_side("legacy-memory", lcmd + ["--sizes", lsizes.to_json(),
                                                      "--workloads", "memory"], logdir,
                             SIDE_TIMEOUT["legacy"])
                lmem = ps.report(payload)
            except RuntimeError as exc:
                say(f"legacy memory run failed: {exc}")

        say("zexec: timed workloads")
        results["zexec"] = run_side("zexec", zcmd + ["--sizes", sizes.to_json()], logdir,
                                    SIDE_TIMEOUT["zexec"])
        results["zexec"]["memory"] = zmem
        if lcmd:
            say("legacy client: timed workloads")
            try:
                results["legacy"] = run_side("legacy", lcmd + ["--sizes", lsizes.to_json()],
                                             logdir, SIDE_TIMEOUT["legacy"])
                results["legacy"]["memory"] = lmem
                results["legacy"]["sizes"] = lsizes.__dict__
            except RuntimeError as exc:
                say(f"legacy side failed: {exc}")
                results["legacy"] = {"error": str(exc)}
    finally:
        stack.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--sides", default="zexec,legacy,ray",
                    help="comma-separated subset of zexec,legacy,ray (zexec always runs)")
    ap.add_argument("--serializer", default="cloudpickle", help="zexec serializer (cloudpickle, the SDK default, or dill)")
    ap.add_argument("--path", default="user,harness",
                    help="zexec paths to measure: user (zexec up + zexec.connect), harness "
                         "(bare broker + server, with the memory runs); both by default")
    ap.add_argument("--no-install", action="store_true",
                    help="fail instead of creating bench/.venv-ray / bench/.venv-legacy")
    ap.add_argument("--results-dir", default=str(BENCH / "results"))
    ap.add_argument("--src", default="",
                    help="run zexec (broker, server, SDK) from this source tree instead, "
                         "for a before/after comparison (e.g. a `git archive` of main)")
    args = ap.parse_args()
    if args.src:
        # Every process the run starts inherits it; this one keeps what it imported.
        os.environ["PYTHONPATH"] = str(Path(args.src).resolve())
    sides = set(args.sides.split(",")) | {"zexec"}
    sizes = Sizes.quick() if args.quick else Sizes()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_dir = Path(args.results_dir)
    logdir = results_dir / f"{stamp}-logs"
    logdir.mkdir(parents=True, exist_ok=True)

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    t_start = time.monotonic()
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        say(f"WARNING: load average {load:.1f} on {os.cpu_count()} CPUs before the run: "
            "something else is busy, expect noisy numbers")
    doc: dict = {
        "timestamp": stamp,
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "zexec_src": args.src or None,
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(),
                 "python": platform.python_version(), "loadavg_at_start": os.getloadavg()},
        "git": git_info(), "sizes": sizes.__dict__, "serializer": args.serializer,
        "results": {}, "errors": {},
    }
    try:
        legacy_py = ray_py = None
        for name in ("legacy", "ray"):
            if name in sides:
                try:
                    py = ensure_venv(name, install=not args.no_install)
                    legacy_py, ray_py = (py, ray_py) if name == "legacy" else (legacy_py, py)
                except (subprocess.SubprocessError, RuntimeError, OSError) as exc:
                    say(f"{name}: cannot set up its venv, skipping: {exc}")
                    doc["errors"][name] = f"venv: {exc}"

        paths = set(args.path.split(","))
        say("raw floors: one hop, plain / CURVE / TLS")
        try:
            doc["results"]["floor"] = run_side(
                "floors", [sys.executable, str(BENCH / "floors.py"), "--sizes",
                           sizes.to_json()], logdir, SIDE_TIMEOUT["zexec"])
        except RuntimeError as exc:
            doc["errors"]["floor"] = str(exc)
        if "user" in paths:
            try:
                doc["results"].update(user_phase(args, sizes, logdir))
            except Exception as exc:  # still run the rest and write what we have
                say(f"user path failed: {exc!r}")
                doc["errors"]["zexec_user"] = f"{exc!r}\n" + "".join(
                    traceback.format_exception(exc))
        if "harness" in paths:
            try:
                doc["results"].update(zexec_phase(args, sizes, legacy_py, logdir))
            except Exception as exc:  # still run Ray and write what we have
                say(f"zexec phase failed: {exc!r}")
                doc["errors"]["zexec"] = f"{exc!r}\n" + "".join(traceback.format_exception(exc))
        if "error" in doc["results"].get("legacy", {}):
            doc["errors"]["legacy"] = doc["results"].pop("legacy")["error"]

        if ray_py is not None:
            say("ray: init + timed workloads (ray.init(num_cpus=2))")
            env_cmd = [str(ray_py), str(BENCH / "ray_side.py"), "--sizes", sizes.to_json()]
            os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0")
            try:
                doc["results"]["ray"] = run_side("ray", env_cmd, logdir, SIDE_TIMEOUT["ray"])
            except RuntimeError as exc:
                say(f"ray side failed: {exc}")
                doc["errors"]["ray"] = str(exc)
    finally:
        left = sweep()
        if left:
            say(f"killed {len(left)} leftover process(es): {left}")
        doc["elapsed_s"] = time.monotonic() - t_start
        doc["host"]["loadavg_at_end"] = os.getloadavg()

    doc["rows"] = report.build(doc["results"], doc["sizes"], judge=not args.quick)
    out = results_dir / f"{stamp}.json"
    out.write_text(json.dumps(doc, indent=2))

    print(f"## zexec benchmark {stamp} (commit {doc['git']['commit']}"
          f"{', src/ modified' if doc['git']['dirty_zexec'] else ''}; "
          f"{doc['host']['cpus']} CPUs; {doc['elapsed_s']:.0f} s)\n")
    print(report.markdown(doc["rows"]))
    print()
    for line in notes(doc):
        print(f"- {line}")
    print(f"\nJSON: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 1 if doc["errors"] else 0


def notes(doc: dict) -> list[str]:
    res, out = doc["results"], []
    z, r, lg = (res.get(k, {}) for k in ("zexec", "ray", "legacy"))
    s = doc["sizes"]
    out.append(f"sizes: {s['calls']} sequential no-op calls after {s['warmup']} warm-up; "
               f"{s['pipelined']} pipelined; {s['payload_mib']} MiB x{s['payload_reps']} "
               f"(median); {s['lines']} lines x{s['lines_reps']} (median); zexec serializer "
               f"{doc['serializer']}, server with 2 workers")
    if z.get("lines") and not z["lines"].get("all_lines_at_return"):
        out.append("zexec: NOT all printed lines had arrived locally when the call returned")
    if r:
        rl = r.get("lines", {})
        out.append(f"Ray {r.get('ray_version')}: ray.init took {r.get('init_s', 0):.1f} s (not "
                   f"counted); 1000 lines = until all lines were printed by the driver "
                   f"(log_to_driver); the call itself returned after "
                   f"{rl.get('call_return', {}).get('median_s', float('nan')) * 1e3:.1f} ms "
                   f"(median), all lines arrived: {rl.get('all_lines_arrived')}")
    if lg:
        ls = lg.get("sizes", {})
        out.append(f"legacy = scidx-rexec 0.1.0 client (new connection per call, dill in-band) "
                   f"against the zexec broker/server: {ls.get('calls')} calls after "
                   f"{ls.get('warmup')} warm-up, payload x{ls.get('payload_reps')}, lines "
                   f"x{ls.get('lines_reps')}; it has no pipelining. Its memory row is the "
                   f"zexec broker/server moving the legacy client's payload")
    for k in ("zexec", "legacy"):
        m = res.get(k, {}).get("memory")
        if m:
            p = m["processes"]
            out.append(
                f"{k} memory: broker {p['broker']['baseline_bytes'] / MIB:.0f} -> "
                f"{p['broker']['peak_bytes'] / MIB:.0f} MiB, server "
                f"{p['server']['baseline_bytes'] / MIB:.0f} -> "
                f"{p['server']['peak_bytes'] / MIB:.0f} MiB, workers "
                f"{p['workers']['baseline_bytes'] / MIB:.0f} -> "
                f"{p['workers']['peak_bytes'] / MIB:.0f} MiB (idle -> peak; HWM reset "
                f"{'ok' if m['hwm_reset'] else 'FAILED: peaks since process start'})")
    la, lb = doc["host"]["loadavg_at_start"], doc["host"].get("loadavg_at_end", (0, 0, 0))
    busy = (" (BUSY before the run: other work was running, numbers are noisy)"
            if la[0] > 0.5 * (doc["host"]["cpus"] or 1) else "")
    out.append(f"1-min load average at start {la[0]:.2f}{busy}, at end {lb[0]:.2f} (includes "
               f"this run) on {doc['host']['cpus']} CPUs")
    for k, v in doc["errors"].items():
        out.append(f"{k}: FAILED: {v.splitlines()[0] if v else v}")
    return out


if __name__ == "__main__":
    sys.exit(main())
