"""The ``zexec`` command's argument handling: help for every subcommand, exit status 2
with one clear message for bad input (never a traceback), and the state-dir commands on
directories without a running stack. Nothing here starts a component."""

from __future__ import annotations

import json
import os
import socket

import pytest

from zexec.apps.cli.main import main

SUBCOMMANDS = [
    "broker",
    "server",
    "deploy-api",
    "ep-api",
    "devidp",
    "web",
    "up",
    "down",
    "status",
    "logs",
]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Exit status, stdout, stderr of ``zexec argv`` (SystemExit included)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_every_subcommand_has_help(capsys, cmd):
    code, out, _ = run(capsys, cmd, "--help")
    assert code == 0
    assert f"usage: zexec {cmd}" in out and len(out.splitlines()) > 3


def test_top_level_help_lists_every_subcommand(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert all(cmd in out for cmd in SUBCOMMANDS)


def test_no_command_prints_help_and_exits_2(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "usage: zexec" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["frobnicate"], "invalid choice"),
        (["up", "--broker-port", "abc"], "not a port number: 'abc'"),
        (["up", "--broker-port", "70000"], "port must be 1-65535, not 70000"),
        (["up", "--ep-port", "0"], "port must be 1-65535, not 0"),
        (["up", "--timeout", "-1"], "seconds must be a finite number >= 0"),
        (["up", "--timeout", "nan"], "seconds must be a finite number >= 0"),
        (["down", "--grace", "soon"], "not a number of seconds: 'soon'"),
        (["logs", "-n", "many"], "not a number of lines: 'many'"),
        (["status", "--bogus"], "unrecognized arguments: --bogus"),
        (["devidp"], "the following arguments are required: --tokens-file"),
        (["web"], "the following arguments are required: --tokens-file"),
        (["web", "--tokens-file", "t.json", "--idp-port", "0"], "port must be 1-65535, not 0"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err


def test_same_port_twice_is_refused(capsys, tmp_path):
    code, _, err = run(
        capsys, "up", "--state-dir", str(tmp_path), "--deploy-port", "5000", "--ep-port", "5000"
    )
    assert code == 2 and "the same port is given for two components" in err
    assert not (tmp_path / "stack.json").exists()


def test_port_in_use_is_refused_before_starting_anything(capsys, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        code, _, err = run(capsys, "up", "--state-dir", str(tmp_path), "--ep-port", str(busy))
    assert code == 1 and f"port {busy} (--ep-port) is in use" in err
    assert not (tmp_path / "stack.json").exists()


def test_component_settings_errors_name_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("ZEXEC_BROKER_FRONTEND_PORT", "abc")
    code, _, err = run(capsys, "broker")
    assert code == 2
    assert "ZEXEC_BROKER_FRONTEND_PORT: Input should be a valid integer" in err


@pytest.mark.parametrize(
    "cmd, message",
    [
        ("broker", "ZEXEC_BROKER_SERVER_SECRET is required"),
        ("server", "ZEXEC_SERVER_USER_ID and ZEXEC_SERVER_CREDENTIAL"),
    ],
)
def test_component_configuration_errors_exit_2(capsys, monkeypatch, cmd, message):
    for key in list(os.environ):
        if key.startswith("ZEXEC_"):
            monkeypatch.delenv(key)
    code, _, err = run(capsys, cmd)
    assert code == 2 and message in err


def test_devidp_with_an_unreadable_token_file(capsys, tmp_path):
    code, _, err = run(capsys, "devidp", "--tokens-file", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read token file" in err


def test_web_with_an_unreadable_token_file(capsys, tmp_path):
    code, _, err = run(capsys, "web", "--tokens-file", str(tmp_path / "missing.json"))
    assert code == 2 and "cannot read token file" in err


def test_state_dir_commands_without_a_stack(capsys, tmp_path):
    code, out, _ = run(capsys, "status", "--state-dir", str(tmp_path))
    assert code == 1 and "no zexec stack in" in out and "zexec up --state-dir" in out
    code, out, _ = run(capsys, "down", "--state-dir", str(tmp_path))
    assert code == 0 and "no zexec stack in" in out
    code, _, err = run(capsys, "logs", "--state-dir", str(tmp_path))
    assert code == 1 and "no logs in" in err


def test_logs_of_an_unknown_component_is_a_usage_error(capsys, tmp_path):
    code, _, err = run(capsys, "logs", "nobody", "--state-dir", str(tmp_path))
    assert code == 2
    assert "no log for 'nobody'" in err and "deploy-api" in err


def test_logs_prints_the_last_lines(capsys, tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "broker.log").write_text("".join(f"line {i}\n" for i in range(100)))
    code, out, _ = run(capsys, "logs", "broker", "-n", "3", "--state-dir", str(tmp_path))
    assert code == 0 and out.split() == ["line", "97", "line", "98", "line", "99"]
    code, out, _ = run(capsys, "logs", "-n", "1", "--state-dir", str(tmp_path))
    assert code == 0 and "broker.log <==\nline 99" in out and "web.log <==" in out


WEB_LOG = """\
2026-01-02 10:00:00,001 [devidp] uvicorn.error INFO Started server process [7]
2026-01-02 10:00:00,002 [deploy-api] uvicorn.error INFO Started server process [7]
2026-01-02 10:00:01,000 [deploy-api] zexec.apps.http_common ERROR boom
(a traceback would continue here,
  File "x.py", line 1, in <module>
 and end) ValueError: boom
2026-01-02 10:00:01,500 [ep-api] uvicorn.access INFO 127.0.0.1:1 - "GET /health HTTP/1.1" 200
2026-01-02 10:00:02,000 [-] root INFO the process itself
"""


def test_logs_of_an_app_of_the_web_process_are_its_lines_of_web_log(capsys, tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "web.log").write_text(WEB_LOG)
    code, out, _ = run(capsys, "logs", "deploy-api", "--state-dir", str(tmp_path))
    assert code == 0
    assert out.splitlines() == [
        WEB_LOG.splitlines()[i]
        for i in (1, 2, 3, 4, 5, 7)  # with the lines continuing a record
    ]
    code, out, _ = run(capsys, "logs", "ep-api", "-n", "2", "--state-dir", str(tmp_path))
    assert out.splitlines() == WEB_LOG.splitlines()[-2:]
    code, out, _ = run(capsys, "logs", "web", "--state-dir", str(tmp_path))
    assert out == WEB_LOG


def _fake_stack(tmp_path, components: dict) -> None:
    stack = {
        "ep_api_url": "http://127.0.0.1:9",
        "deploy_api_url": "http://127.0.0.1:9",
        "broker_host": "127.0.0.1",
        "broker_port": 9,
        "auth_url": "http://127.0.0.1:9/auth",
        "tokens": {},
        "state_dir": str(tmp_path),
        "ready": True,
        "components": components,
    }
    (tmp_path / "stack.json").write_text(json.dumps(stack))


def _web(pid: int, port: int = 9) -> dict:
    """A web process entry of stack.json; nothing listens on port 9 (discard)."""
    base = f"http://127.0.0.1:{port}"
    return {
        "pid": pid,
        "start": None,
        "apps": {
            "devidp": {"url": f"{base}/auth", "health": f"{base}/healthz"},
            "deploy-api": {"url": f"{base}/rexec", "health": f"{base}/rexec/healthz"},
            "ep-api": {"url": base, "health": f"{base}/health"},
        },
    }


def test_up_refuses_a_partly_running_stack(capsys, tmp_path):
    # This test process stands in for a live component; pid 0 is never alive.
    _fake_stack(
        tmp_path,
        {
            "broker": {"pid": 0, "start": None, "url": "tcp://x", "health": None},
            "web": _web(os.getpid()),
        },
    )
    code, _, err = run(capsys, "up", "--state-dir", str(tmp_path))
    assert code == 1 and "partly running (web)" in err and "zexec down" in err


def test_status_reports_down_and_unhealthy_components(capsys, tmp_path):
    _fake_stack(
        tmp_path,
        {
            "broker": {"pid": 0, "start": None, "url": "tcp://127.0.0.1:9", "health": None},
            "web": _web(os.getpid()),
        },
    )
    code, out, _ = run(capsys, "status", "--state-dir", str(tmp_path), "--json")
    doc = json.loads(out)
    assert code == 1
    assert list(doc["components"]) == ["devidp", "broker", "deploy-api", "ep-api"]
    for name in ("devidp", "deploy-api", "ep-api"):
        assert doc["components"][name] == {
            "state": "unhealthy",
            "pid": os.getpid(),
            "url": _web(0)["apps"][name]["url"],
            "process": "web",
        }
    assert doc["components"]["broker"]["state"] == "down"
    assert doc["servers"] == []
    code, out, _ = run(capsys, "status", "--state-dir", str(tmp_path))
    assert f"deploy-api  unhealthy  http://127.0.0.1:9/rexec  (pid {os.getpid()}, web" in out


def test_status_reads_a_stack_json_of_four_processes(capsys, tmp_path):
    # stack.json of a stack started before `zexec web` existed: one process per app.
    _fake_stack(
        tmp_path,
        {
            "ep-api": {
                "pid": os.getpid(),
                "start": None,
                "url": "http://127.0.0.1:9",
                "health": "http://127.0.0.1:9/health",
            },
            "devidp": {
                "pid": 0,
                "start": None,
                "url": "http://127.0.0.1:9/auth",
                "health": "http://127.0.0.1:9/healthz",
            },
        },
    )
    code, out, _ = run(capsys, "status", "--state-dir", str(tmp_path), "--json")
    doc = json.loads(out)
    assert code == 1
    assert doc["components"]["ep-api"]["state"] == "unhealthy"
    assert doc["components"]["ep-api"]["process"] == "ep-api"
    assert doc["components"]["devidp"]["state"] == "down"
