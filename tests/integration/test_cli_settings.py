"""``zexec up`` passes the ``ZEXEC_*`` settings of its environment to the stack (not the
SDK's own, and never to the users' servers): a real stack, a setting that shows in what
the web process answers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.helpers.cli import ZEXEC
from zexec.apps.cli.plan import child_env, passed_settings

pytestmark = pytest.mark.timeout(300)


def test_passed_settings_leave_out_the_sdks_own():
    env = {"ZEXEC_DEPLOY_MAX_CPUS": "8", "ZEXEC_TOKEN": "t", "ZEXEC_BROKER_URL": "tcp://x:1",
           "ZEXEC_STATE_DIR": "/s", "ZEXEC_DEBUG": "1", "ZEXEC_BROKER_TLS_PIN": "ab",
           "PATH": "/bin"}
    assert passed_settings(env) == {"ZEXEC_DEPLOY_MAX_CPUS": "8"}


def test_what_up_sets_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("ZEXEC_DEPLOY_PORT", "1")
    monkeypatch.setenv("ZEXEC_LOG_BACKUPS", "7")
    env = child_env(ZEXEC_DEPLOY_PORT="5000")
    assert env["ZEXEC_DEPLOY_PORT"] == "5000" and env["ZEXEC_LOG_BACKUPS"] == "7"


def test_up_passes_settings_to_the_stack(tmp_path):
    state = tmp_path / "state"
    env = {**os.environ, "ZEXEC_HTTP_MAX_BODY_BYTES": "2048", "ZEXEC_TOKEN": "not-for-the-stack",
           "ZEXEC_DEPLOY_MAX_CPU": "8"}  # a typo of ZEXEC_DEPLOY_MAX_CPUS

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*ZEXEC, *args, "--state-dir", str(state)], env=env,
                              capture_output=True, text=True, timeout=240)

    up = cli("up")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "ZEXEC_DEPLOY_MAX_CPU, ZEXEC_HTTP_MAX_BODY_BYTES  (from the environment)" \
            in up.stdout
        warnings = [line for line in up.stdout.splitlines() if "not a zexec setting" in line]
        assert warnings == ["WARNING: ZEXEC_DEPLOY_MAX_CPU is not a zexec setting: nothing "
                            "reads it (did you mean ZEXEC_DEPLOY_MAX_CPUS?)"]
        stack = json.loads((state / "stack.json").read_text())
        assert stack["settings_from_environment"] == ["ZEXEC_DEPLOY_MAX_CPU",
                                                      "ZEXEC_HTTP_MAX_BODY_BYTES"]
        web = Path(f"/proc/{stack['components']['web']['pid']}/environ").read_bytes()
        assert b"ZEXEC_HTTP_MAX_BODY_BYTES=2048\0" in web
        assert b"ZEXEC_TOKEN=" not in web
        # The web process really uses it: 4 KiB is over its limit now (default 1 MiB).
        url = stack["deploy_api_url"] + stack["deploy_api_prefix"] + "/spawn"
        token = stack["tokens"]["alice"]
        big = httpx.post(url, content=b"x" * 4096, timeout=30,
                         headers={"Authorization": f"Bearer {token}",
                                  "Content-Type": "application/json"})
        assert big.status_code == 413
    finally:
        down = cli("down")
        assert down.returncode == 0, down.stdout + down.stderr
