"""A ``zexec up`` stack run by an unprivileged uid, as a user without root would run it:
it cannot give each user their own uid. It says how users are isolated at start and in
``zexec status``; without isolation (``--isolation none``, or no usable bubblewrap) it
serves the first user only and refuses bob with a message saying why and what the
operator can do, unless the operator declared a single trust domain.

The stack runs from a virtual environment made for the test from an interpreter that
other uids can reach (the one running the tests may live under ``/root``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(os.geteuid() != 0, reason="runs the stack as another uid: needs root "
                       "(as a non-root user, test_tenants.py already runs the stack unprivileged)"),
]

UID = 60999  # no account needed; outside the range zexec allocates from
PYTHON = "{}.{}".format(*sys.version_info[:2])


@pytest.fixture(scope="module")
def top(reachable_venv):
    """A directory uid UID may pass through, holding ``venv/`` (see conftest)."""
    return reachable_venv[0]


def as_uid(top: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(top / "home"),
           "UV_CACHE_DIR": str(top / "home" / "uv-cache")}
    proc = subprocess.run([str(top / "venv/bin/zexec"), *args], capture_output=True, text=True,
                          timeout=300, user=UID, group=UID, extra_groups=[], env=env, cwd=top)
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def state(top, request):
    home = top / "home"
    home.mkdir(exist_ok=True)
    os.chown(home, UID, UID)
    d = home / request.node.name
    yield d
    as_uid(top, "down", "--state-dir", str(d), check=False)


def spawn(stack: dict, user: str) -> httpx.Response:
    return httpx.post(f"{stack['deploy_api_url']}/rexec/spawn",
                      json={"requirements": [f"python=={PYTHON}"]},
                      headers={"Authorization": f"Bearer {stack['tokens'][user]}"}, timeout=60)


def bwrap_works_for_uid() -> bool:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False
    return subprocess.run(
        [bwrap, "--unshare-pid", "--unshare-ipc", "--ro-bind", "/", "/", "--proc", "/proc",
         "--dev", "/dev", "true"], user=UID, group=UID, extra_groups=[], capture_output=True,
    ).returncode == 0


def test_auto_picks_the_sandbox_or_says_there_is_no_isolation(top, state):
    out = as_uid(top, "up", "--state-dir", str(state)).stdout
    stack = json.loads((state / "stack.json").read_text())
    assert stack["components"]["web"]["pid"]
    mode = stack["isolation"]["mode"]
    assert mode == ("sandbox" if bwrap_works_for_uid() else "none")
    status = as_uid(top, "status", "--state-dir", str(state)).stdout
    assert f"isolation   {mode}: " in status and f"isolation       {mode}: " in out
    # A uid of its own needs root: asked for explicitly, it is a clear error.
    as_uid(top, "down", "--state-dir", str(state))
    bad = as_uid(top, "up", "--state-dir", str(state), "--isolation", "uid", check=False)
    assert bad.returncode == 2 and "needs root" in bad.stderr


def test_without_isolation_a_second_user_is_refused(top, state):
    out = as_uid(top, "up", "--state-dir", str(state), "--isolation", "none").stdout
    assert "WARNING: the users of this stack are not isolated" in out
    status = as_uid(top, "status", "--state-dir", str(state)).stdout
    assert "isolation   none: NONE" in status and "a second user is refused" in status
    stack = json.loads((state / "stack.json").read_text())
    assert spawn(stack, "alice").status_code in (200, 422)  # 422: a build the uid cannot do
    refused = spawn(stack, "bob")
    assert refused.status_code == 403
    detail = refused.json()["detail"]
    assert "cannot isolate users" in detail and "serves one user only, and that is alice" in detail
    assert "--single-trust-domain" in detail
    assert spawn(stack, "alice").status_code in (200, 422)  # alice stays welcome
    # The owner is durable: a restarted stack still refuses bob.
    as_uid(top, "down", "--state-dir", str(state))
    as_uid(top, "up", "--state-dir", str(state), "--isolation", "none")
    assert spawn(stack, "bob").status_code == 403


def test_a_single_trust_domain_admits_every_user(top, state):
    out = as_uid(top, "up", "--state-dir", str(state), "--isolation", "none",
                 "--single-trust-domain").stdout
    assert "single trust domain: several users allowed" in out
    stack = json.loads((state / "stack.json").read_text())
    assert spawn(stack, "alice").status_code in (200, 422)
    assert spawn(stack, "bob").status_code in (200, 422)
