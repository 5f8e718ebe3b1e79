"""How ``zexec down`` stops processes, with real stand-in processes: whole process groups,
SIGKILL for one that ignores SIGTERM, pid reuse never signalled, and leftovers of the
local orchestrator (found by their working directory) stopped even without stack.json."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zexec.apps.cli import procs
from zexec.apps.cli.stack import StateDir, down

# A parent that forks a child into its own group, then both wait; with IGNORE set the
# parent ignores SIGTERM (only SIGKILL stops it).
FAMILY = textwrap.dedent("""
    import os, signal, sys, time
    if sys.argv[1] == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = os.fork()
    if child:
        print(child, flush=True)
    time.sleep(600)
""")


def start_family(cwd, mode: str = "obey") -> tuple[int, int]:
    """(parent pid, child pid), the parent leading a new session, like a component."""
    proc = subprocess.Popen(
        [sys.executable, "-c", FAMILY, mode],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    child = int(proc.stdout.readline())
    return proc.pid, child


@pytest.mark.parametrize("mode", ["obey", "ignore"])
def test_stop_groups_leaves_no_member_alive(tmp_path, mode):
    parent, child = start_family(tmp_path, mode)
    killed = procs.stop_groups([(parent, procs.start_time(parent))], grace=0.5)
    assert killed == ([parent] if mode == "ignore" else [])
    assert not procs.alive(parent) and not procs.alive(child)


def test_a_reused_pid_is_never_signalled(tmp_path):
    parent, child = start_family(tmp_path)
    try:
        wrong_start = procs.start_time(parent) + 1  # what a reused pid looks like
        assert not procs.alive(parent, wrong_start)
        assert procs.stop_groups([(parent, wrong_start)], grace=0.5) == []
        assert procs.alive(parent) and procs.alive(child)
    finally:
        procs.stop_groups([(parent, None)], grace=0.5)


def test_down_stops_components_and_orchestrator_leftovers(tmp_path):
    d = StateDir(tmp_path)
    (d.orchestrator / "envs").mkdir(parents=True)
    comp, comp_child = start_family(tmp_path)
    # A "server" the Deploy API did not stop: found through its cwd.
    server, worker = start_family(d.orchestrator / "envs", "ignore")
    d.stack_json.write_text(
        json.dumps(
            {
                "components": {
                    "broker": {"pid": comp, "start": procs.start_time(comp), "url": "tcp://x"}
                }
            }
        )
    )
    out = io.StringIO()
    assert down(d, grace=0.5, out=out) is True
    assert "leftover server process(es)" in out.getvalue() and str(server) in out.getvalue()
    assert not any(procs.alive(p) for p in (comp, comp_child, server, worker))
    assert not d.stack_json.exists()


# A web process stand-in: on SIGTERM it notes whether the broker (pid argv[1]) still
# runs, as the real one's Deploy API needs it while stopping the users' servers.
WEB = textwrap.dedent("""
    import os, signal, sys, time
    def term(*_):
        try:
            os.kill(int(sys.argv[1]), 0)
            seen = "broker alive"
        except ProcessLookupError:
            seen = "broker gone"
        open(sys.argv[2], "w").write(seen)
        sys.exit(0)
    signal.signal(signal.SIGTERM, term)
    print("ready", flush=True)
    time.sleep(600)
""")


def test_down_stops_the_web_process_before_the_broker(tmp_path):
    d = StateDir(tmp_path)
    broker, broker_child = start_family(tmp_path)
    note = tmp_path / "seen"
    web = subprocess.Popen(
        [sys.executable, "-c", WEB, str(broker), str(note)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert web.stdout.readline() == "ready\n"
    web_entry = {"pid": web.pid, "start": procs.start_time(web.pid), "apps": {"deploy-api": {}}}
    broker_entry = {"pid": broker, "start": procs.start_time(broker), "url": "tcp://x"}
    # The broker first in the file: the order of stack.json is not the order of `down`.
    d.stack_json.write_text(json.dumps({"components": {"broker": broker_entry, "web": web_entry}}))
    assert down(d, grace=5.0, out=io.StringIO()) is True
    web.wait(5)
    assert note.read_text() == "broker alive"
    assert not any(procs.alive(p) for p in (web.pid, broker, broker_child))


def test_down_without_stack_json_still_sweeps_the_orchestrator_dir(tmp_path):
    d = StateDir(tmp_path)
    d.orchestrator.mkdir()
    server, worker = start_family(d.orchestrator)
    out = io.StringIO()
    assert down(d, grace=0.5, out=out) is True
    assert "stopped 2 leftover process(es)" in out.getvalue()
    assert not procs.alive(server) and not procs.alive(worker)


def test_processes_under_never_names_our_own_ancestors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert os.getpid() not in procs.processes_under(tmp_path)


def test_a_failed_up_reports_and_stops_what_it_started(tmp_path, capsys):
    from zexec.apps.cli.main import main

    # --timeout 0: no component can be ready in time, so up must clean up after itself.
    assert main(["up", "--state-dir", str(tmp_path), "--timeout", "0"]) == 1
    err = capsys.readouterr().err
    assert "not ready after 0s; last lines of" in err and "Traceback" not in err
    assert not (tmp_path / "stack.json").exists()
    assert procs.processes_under(tmp_path) == []  # components run with cwd = state dir


def test_a_port_in_time_wait_counts_as_free(tmp_path):
    """After a crash the stack's ports hold connections in TIME_WAIT; ``up`` binds them
    again (its check uses SO_REUSEADDR, as the broker and uvicorn do)."""
    import socket

    from zexec.apps.cli.plan import port_in_use

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    assert port_in_use(port)  # listening
    conn.close()  # the listening side closes first: its end of the port goes to TIME_WAIT
    client.close()
    listener.close()
    states = Path("/proc/net/tcp").read_text()
    assert f":{port:04X} " in states  # the TIME_WAIT entry is still there ...
    assert not port_in_use(port)  # ... and the port counts as free
    with socket.socket() as plain:  # without SO_REUSEADDR it would not
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
