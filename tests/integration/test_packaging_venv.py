"""``pip install zexec`` (no extra) in a fresh venv: the client SDK imports nothing of the
server side, and the stack's commands say which extra to install instead of failing
with a ModuleNotFoundError."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers.packaging import built_wheel
from zexec.adapters.orchestrator_local import find_uv

#: Modules of the stack's own side: none may be imported by the client SDK.
SERVER_SIDE = ("fastapi", "starlette", "uvicorn", "kubernetes", "dependency_injector",
               "prometheus_client", "jwt", "zexec.apps.deploy_api", "zexec.apps.ep_api",
               "zexec.apps.devidp", "zexec.apps.broker", "zexec.apps.server",
               "zexec.apps.cli", "zexec.adapters.orchestrator_local",
               "zexec.adapters.orchestrator_k8s", "zexec.adapters.catalog_sqlite",
               "zexec.settings")

CLIENT_USE = """
import json, sys
import zexec
from zexec import connect, remote, Client, environment, terminate
zexec.RemoteError, zexec.EnvironmentFailed
@zexec.remote
def f(x):
    return x
c = Client("tcp://127.0.0.1:9", "token")      # builds the client (no connection yet)
c.close()
print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("base-venv") / "venv"
    uv = find_uv()
    for cmd in ([uv, "venv", "--quiet", str(root)],
                [uv, "pip", "install", "--quiet", "--python", str(root / "bin" / "python"),
                 str(built_wheel())]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    return root


def run(venv, *args, cwd):
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True,
                          text=True, timeout=120, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def test_client_sdk_imports_nothing_of_the_server_side(base_venv, tmp_path):
    done = run(base_venv, "python", "-c", CLIENT_USE, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    bad = [m for m in loaded if m in SERVER_SIDE or m.startswith(tuple(
        f"{s}." for s in SERVER_SIDE))]
    assert not bad, f"the client SDK imported server-side modules: {bad}"
    assert "zexec.apps.client.connect" in loaded  # the check itself saw the SDK load


@pytest.mark.parametrize("argv, what", [
    (("zexec", "up", "--state-dir", "st"), "zexec up"),
    (("zexec", "web", "--tokens-file", "t.json"), "zexec web"),
    (("python", "-m", "zexec.apps.deploy_api"), "zexec deploy-api"),
    (("python", "-m", "zexec.apps.ep_api"), "zexec ep-api"),
    (("python", "-m", "zexec.apps.devidp", "--tokens-file", "t.json"), "zexec devidp"),
])
def test_server_commands_name_the_extra_to_install(base_venv, tmp_path, argv, what):
    done = run(base_venv, *argv, cwd=tmp_path)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert f"{what} needs zexec's server extra" in done.stderr
    assert "pip install 'zexec[server]'" in done.stderr
    assert not (tmp_path / "st").exists()  # `up` checked before it started anything
