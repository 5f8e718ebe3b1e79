"""``zexec.connect`` against mocked HTTP (respx): discovery URL logic, error mapping,
the environment() polling loop and the progress display's three sinks. The same flows
against the real apps under uvicorn are in tests/integration/test_connect_http.py."""

from __future__ import annotations

import io
import sys
import types

import httpx
import pytest
import respx

import zexec
from zexec.apps.client import connect as C
from zexec.apps.client.progress import Progress
from zexec.core import errors as E

EP = "http://ep.test"
DEPLOY = "http://deploy.test:8000/rexec"
PY = C.PYTHON


@pytest.fixture
def mocked():
    with respx.mock(assert_all_called=False) as router:
        router.get(f"{EP}/status/rexec").respond(
            json={"deployment_api_url": "http://deploy.test:8000"}
        )
        router.get(f"{EP}/user/info").respond(json={"sub": "u-1", "username": "alice"})
        router.get(f"{DEPLOY}/broker-config").respond(
            json={"broker_external_host": "broker.test", "broker_external_port": 5559}
        )
        yield router


@pytest.fixture
def conn(mocked):
    c = zexec.connect(EP + "/", "tok")
    yield c
    c.close()


@pytest.mark.parametrize(
    "reported, expected",
    [
        ("http://d:1", "http://d:1/rexec"),
        ("http://d:1/", "http://d:1/rexec"),
        ("http://d:1/rexec", "http://d:1/rexec"),
        ("http://d:1/rexec/", "http://d:1/rexec"),
        (" http://d:1/api ", "http://d:1/api/rexec"),
    ],
)
def test_deploy_url_appends_rexec_unless_present(reported, expected):
    assert C.deploy_url_from(reported) == expected


def test_connect_discovers_deploy_api_and_broker(conn, mocked):
    assert conn.deploy_url == DEPLOY
    assert conn.broker_url == "tcp://broker.test:5559"
    assert conn.client.broker == "tcp://broker.test:5559"
    assert zexec.get_default_client() is conn.client
    assert conn.user["username"] == "alice" and "alice" in repr(conn)
    assert mocked.calls[1].request.headers["authorization"] == "Bearer tok"


PIN = "ab" * 32


@pytest.mark.parametrize("host, encrypt, expected", [
    ("broker.test", None, ("tls://broker.test:5562", PIN)),  # remote: encrypted
    ("broker.test", True, ("tls://broker.test:5562", PIN)),
    ("broker.test", False, ("tcp://broker.test:5559", None)),
    ("127.0.0.1", None, ("tcp://127.0.0.1:5559", None)),  # loopback: never leaves the host
    ("localhost", None, ("tcp://localhost:5559", None)),
    ("::1", None, ("tcp://::1:5559", None)),
    ("127.0.0.1", True, ("tls://127.0.0.1:5562", PIN)),  # unless the user insists
])
def test_connect_takes_the_encrypted_port_unless_the_broker_is_local(mocked, host, encrypt,
                                                                    expected):
    cfg = {"broker_external_host": host, "broker_external_port": 5559,
           "broker_external_secure_port": 5562, "broker_tls_sha256": PIN}
    mocked.get(f"{DEPLOY}/broker-config").respond(json=cfg)
    assert C.broker_address(cfg, encrypt) == expected
    if ":" in host:
        return  # (a bare IPv6 address is not a URL host; the broker-config logic is)
    c = zexec.connect(EP, "tok", encrypt=encrypt)
    try:
        assert c.broker_url == expected[0]
    finally:
        c.close()


def test_connect_refuses_to_go_unencrypted_when_asked_not_to(mocked):
    with pytest.raises(E.ConfigurationError, match="offers no encrypted port"):
        zexec.connect(EP, "tok", encrypt=True)


@pytest.mark.parametrize(
    "route, response, error, text",
    [
        (
            "status/rexec",
            httpx.Response(404, json={"detail": "not configured"}),
            zexec.ControlPlaneError,
            "remote execution is not enabled at http://ep.test",
        ),
        (
            "status/rexec",
            httpx.Response(200, json={}),
            zexec.ControlPlaneError,
            "did not name a deployment_api_url",
        ),
        (
            "status/rexec",
            httpx.Response(200, text="<html>"),
            zexec.ControlPlaneError,
            "not a JSON object",
        ),
        (
            "user/info",
            httpx.Response(401, json={"detail": "not authenticated: bad token"}),
            zexec.ZexecError,
            "check the token",
        ),
        (
            "user/info",
            httpx.Response(
                503, json={"detail": "identity provider unavailable", "code": "AUTH_UNAVAILABLE"}
            ),
            zexec.ZexecError,
            "identity provider unavailable",
        ),
        (
            "status/rexec",
            httpx.ConnectError("refused"),
            zexec.ControlPlaneError,
            "cannot reach http://ep.test/status/rexec",
        ),
    ],
)
def test_connect_errors_say_what_went_wrong(mocked, route, response, error, text):
    r = mocked.get(f"{EP}/{route}")
    if isinstance(response, Exception):
        r.mock(side_effect=response)
    else:
        r.mock(return_value=response)
    with pytest.raises(error, match=text.replace(".", r"\.").replace("(", r"\(")):
        zexec.connect(EP, "tok")


def test_connect_refuses_bad_arguments():
    with pytest.raises(zexec.ZexecError, match="must start with http"):
        zexec.connect("ep.test:8001", "tok")
    with pytest.raises(zexec.ZexecError, match="needs your token"):
        zexec.connect(EP, "")


def test_requirement_list_adds_the_python_pin(tmp_path):
    assert C.requirement_list(None, None) == [f"python=={PY}"]
    assert C.requirement_list(["numpy"], "3.12") == ["python==3.12", "numpy"]
    assert C.requirement_list(["python==3.10", "six"], None) == ["python==3.10", "six"]
    assert C.requirement_list(["python==3.10"], "3.10") == ["python==3.10"]
    assert C.requirement_list([" Python >=3.10"], None) == [" Python >=3.10"]
    assert C.requirement_list(["pythonista"], "3.12") == ["python==3.12", "pythonista"]
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("# comment\nsix\n")
    assert C.requirement_list(str(reqs), None) == [f"python=={PY}", "# comment", "six"]
    assert C.requirement_list(reqs, None)[-1] == "six"


@pytest.mark.parametrize(
    "requirements, python, text",
    [
        (["python==3.10"], "3.12", "disagree"),
        ("numpy", None, "requirements file 'numpy' not found"),
        ([1, 2], None, "list of strings"),
    ],
)
def test_requirement_list_refusals(requirements, python, text):
    with pytest.raises(zexec.ZexecError, match=text):
        C.requirement_list(requirements, python)


def _status(phase: str, **extra) -> dict:
    progress = {"pending": 0.0, "installing": 0.25, "starting": 0.75, "ready": 1.0}
    return {"phase": phase, "progress": progress.get(phase), "reason": "", "log_tail": [], **extra}


def test_environment_posts_json_and_polls_until_ready(conn, mocked, capsys):
    spawn = mocked.post(f"{DEPLOY}/spawn").respond(json=_status("pending"))
    mocked.get(f"{DEPLOY}/status").mock(
        side_effect=[
            httpx.Response(200, json=_status("installing", log_tail=["Resolved 3 packages"])),
            httpx.Response(200, json=_status("starting")),
            httpx.Response(200, json=_status("ready")),
        ]
    )
    st = conn.environment(["six"], poll=0)
    assert st["phase"] == "ready"
    req = spawn.calls[0].request
    assert req.headers["authorization"] == "Bearer tok"
    assert req.headers["content-type"] == "application/json"
    assert httpx.Response(200, content=req.content).json() == {
        "requirements": [f"python=={PY}", "six"],
        "force": False,
    }
    err = capsys.readouterr().err  # not a TTY here: one plain line per phase
    lines = err.splitlines()
    assert [ln.split("]")[1].split()[0] for ln in lines[:-1]] == [
        "pending",
        "installing",
        "starting",
    ]
    assert "Resolved 3 packages" in lines[1]
    assert lines[-1].startswith("zexec environment: ready (")


def test_environment_conflict_tells_to_force(conn, mocked):
    mocked.post(f"{DEPLOY}/spawn").respond(409, json={"detail": "conflict: alice runs other"})
    with pytest.raises(zexec.EnvironmentConflict, match=r"environment\(\.\.\., force=True\)"):
        conn.environment(["six"], progress=False)


def test_environment_invalid_requirement(conn, mocked):
    mocked.post(f"{DEPLOY}/spawn").respond(
        422, json={"detail": "invalid environment: requirement '-e .': pip options"}
    )
    with pytest.raises(zexec.InvalidEnvironment, match="pip options"):
        conn.environment(["-e ."], progress=False)


def test_environment_failed_build_carries_reason_and_log(conn, mocked):
    mocked.post(f"{DEPLOY}/spawn").respond(json=_status("installing"))
    mocked.get(f"{DEPLOY}/status").respond(
        json=_status(
            "failed",
            reason="building the environment failed: uv exited 1",
            log_tail=["error: No solution found", "nosuchpkg was not found"],
        )
    )
    with pytest.raises(zexec.EnvironmentFailed) as info:
        conn.environment(["nosuchpkg"], progress=False, poll=0)
    assert info.value.reason.endswith("uv exited 1")
    assert "nosuchpkg was not found" in str(info.value)


def test_environment_timeout_and_vanished_server(conn, mocked):
    mocked.post(f"{DEPLOY}/spawn").respond(json=_status("installing"))
    with pytest.raises(zexec.EnvironmentTimeout, match="not ready after 0s"):
        conn.environment(timeout=0, progress=False)
    mocked.get(f"{DEPLOY}/status").respond(404, json={"detail": "alice has no server"})
    with pytest.raises(zexec.EnvironmentFailed, match="disappeared"):
        conn.environment(progress=False, poll=0)


def test_status_and_terminate(conn, mocked):
    mocked.get(f"{DEPLOY}/status").respond(404, json={"detail": "none"})
    assert conn.status() is None
    term = mocked.delete(f"{DEPLOY}/terminate").respond(json={"terminated": True})
    assert conn.terminate() == {"terminated": True}
    assert term.calls[0].request.headers["authorization"] == "Bearer tok"
    assert zexec.terminate() == {"terminated": True}  # the module-level shortcut


def test_module_level_environment_needs_a_connection(monkeypatch):
    monkeypatch.setattr(C, "_default", None)
    with pytest.raises(zexec.ZexecError, match=r"call zexec\.connect"):
        zexec.environment()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_rewrites_one_line():
    out = Tty()
    p = Progress(stream=out)
    assert p.mode == "tty"
    p.update(_status("installing"))
    p.update(_status("starting"))
    p.close("ready (1.0s)")
    text = out.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 1 and text.endswith("ready (1.0s)\x1b[K\n")


def test_progress_in_jupyter_updates_one_display(monkeypatch):
    shown: list[tuple[str, object]] = []

    class Handle:
        def update(self, obj):
            shown.append(("update", obj.data))

    def display(obj, display_id=False):
        assert display_id is True
        shown.append(("display", obj.data))
        return Handle()

    class Pretty:
        def __init__(self, data):
            self.data = data

    shell = types.SimpleNamespace(kernel=object())
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    ipython_display = types.ModuleType("IPython.display")
    ipython_display.display, ipython_display.Pretty = display, Pretty
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", ipython_display)
    p = Progress(stream=Tty())
    assert p.mode == "jupyter"
    p.update(_status("pending"))
    p.update(_status("installing"))
    p.close("ready (2.0s)")
    assert [kind for kind, _ in shown] == ["display", "update", "update"]
    assert "installing" in shown[1][1] and shown[2][1] == "zexec environment: ready (2.0s)"


def test_progress_off_writes_nothing():
    out = Tty()
    p = Progress(enabled=False, stream=out)
    p.update(_status("pending"))
    p.close("ready")
    assert out.getvalue() == ""


def _verifies(client: httpx.Client) -> bool:
    """Whether ``client`` checks server certificates (httpx keeps the SSL context on its
    connection pool)."""
    import ssl

    return client._transport._pool._ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_certificates_are_checked_for_an_https_deploy_api_behind_a_plain_ep(mocked):
    mocked.get(f"{EP}/status/rexec").respond(
        json={"deployment_api_url": "https://deploy.test:8443"})
    mocked.get("https://deploy.test:8443/rexec/broker-config").respond(
        json={"broker_external_host": "broker.test", "broker_external_port": 5559})
    c = zexec.connect(EP, "tok")
    try:
        assert c.deploy_url == "https://deploy.test:8443/rexec" and _verifies(c._http)
    finally:
        c.close()


def test_a_plain_http_deployment_loads_no_certificates(conn):
    assert not _verifies(conn._http)


def test_status_is_polled_fast_at_first_then_every_poll_seconds():
    assert C.poll_interval(0.0, 0.5) == C.poll_interval(2.9, 0.5) == 0.05
    assert C.poll_interval(3.0, 0.5) == 0.5
    assert C.poll_interval(0.0, 0.01) == 0.01  # never slower than asked
