"""``environment(..., force=True)`` is safe, against a real ``zexec up`` stack (local
orchestrator, real uv builds, real servers): the new environment is built beside the
working server, which serves calls until the new one is ready; a build that fails
leaves it serving and says so; Ctrl-C while waiting cancels the build."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid

import pytest

import zexec
from tests.integration.test_cli_up import zexec_cli
from zexec.apps.client.connect import PYTHON

pytestmark = pytest.mark.timeout(900)  # env builds; a hang guard, not a measurement


@pytest.fixture(scope="module")
def conn(tmp_path_factory):
    state = tmp_path_factory.mktemp("force") / "state"
    zexec_cli("up", state=state)
    stack = json.loads((state / "stack.json").read_text())
    c = zexec.connect(stack["ep_api_url"], stack["tokens"]["alice"])
    c.environment([f"python=={PYTHON}"], progress=False, timeout=600)
    yield c
    c.close()
    zexec_cli("down", state=state, check=False)


def pid() -> str:
    """The worker process as ``pid@start time``: a sandboxed server has its own pid
    namespace, where every server's first worker may get the same pid."""
    import os

    with open("/proc/self/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]  # field 22, clock ticks since boot
    return f"{os.getpid()}@{start}"


def a_fresh_requirement() -> str:
    """six, with a specifier no earlier run used: a new digest, so a real build."""
    return f"six>=1.0,!=0.0.{uuid.uuid4().int % 10**9}"


def test_a_failing_forced_build_leaves_the_working_server_serving(conn):
    f = zexec.remote(pid)
    before = f()
    with pytest.raises(zexec.EnvironmentFailed) as info:
        conn.environment([f"python=={PYTHON}", "zexec-test-no-such-package-4711"],
                         force=True, progress=False)
    assert "your previous server" in str(info.value) and "keeps serving" in str(info.value)
    assert f() == before  # the very same server process
    st = conn.status()
    assert st["phase"] == "failed" and st["previous"]["phase"] == "ready"
    # Asking for the environment it serves is no rebuild and no restart.
    assert conn.environment([f"python=={PYTHON}"], progress=False)["previous"] is None
    assert f() == before


def test_the_old_server_serves_while_the_new_environment_builds(conn):
    f = zexec.remote(pid)
    old = f()
    wanted = [f"python=={PYTHON}", a_fresh_requirement()]
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(
        st=conn.environment(wanted, force=True, progress=False)))
    worker.start()
    served = 0
    while worker.is_alive():
        st = conn.status()
        if st["phase"] == "installing" and st["previous"]:
            assert f() == old  # a call during the build: the old server answers
            served += 1
        time.sleep(0.02)
    worker.join()
    assert served > 0, "the build ended before a call could be made during it"
    assert result["st"]["phase"] == "ready" and result["st"]["previous"] is None

    def has_six():
        import six

        return six.__name__

    assert zexec.remote(has_six)() == "six" and f() != old  # the new server


def test_ctrl_c_while_waiting_cancels_the_build(conn, capsys):
    f = zexec.remote(pid)
    conn.environment([f"python=={PYTHON}"], force=True, progress=False)  # a known start
    serving = f()
    main = threading.get_ident()
    fired = threading.Event()

    def interrupt_once_installing() -> None:
        while not fired.is_set():
            st = conn.status() or {}
            if st.get("phase") == "installing" and st.get("previous"):
                fired.set()
                signal.pthread_kill(main, signal.SIGINT)  # what Ctrl-C does
            time.sleep(0.01)

    t = threading.Thread(target=interrupt_once_installing, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        conn.environment([f"python=={PYTHON}", a_fresh_requirement()], force=True)
    fired.set()
    t.join(10)
    err = capsys.readouterr().err
    # The progress display ends with one line that says what happened.
    assert err.rstrip().endswith(
        "interrupted: build cancelled, your previous server keeps serving")
    st = conn.status()
    assert st["phase"] == "ready" and st["previous"] is None
    assert st["env"]["requirements"] == []
    assert f() == serving
