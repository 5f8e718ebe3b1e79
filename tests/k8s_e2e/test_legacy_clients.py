"""The released clients (``ndp-ep==0.9.0`` + ``scidx-rexec==0.1.0``, unmodified, in their
own venv: tests/integration/legacy_env.py) against the one-machine cluster: discovery
through the EP API container, a spawn through the Deploy API container (the server is a
podman container), calls through the broker container."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

import pytest

from tests.k8s_e2e import podman

pytest_plugins = ["tests.integration.legacy_env"]
pytestmark = [pytest.mark.legacy, pytest.mark.timeout(900)]

SCRIPT = """
import os
from ndp_ep import APIClient
from rexec.client_api import remote_func

c = APIClient(base_url=os.environ["EP_API_URL"], token=os.environ["EP_TOKEN"])
print("RESULT", repr(c.setup_rexec_environment([os.environ["PY_PIN"]])), flush=True)

@remote_func
def where(a, b):
    import os
    return a + b, os.getuid(), os.path.exists("/var/run/secrets/kubernetes.io")

print("RESULT", repr(where(5, 2)), flush=True)
"""


def test_released_clients_spawn_and_call_a_pod(cluster, legacy_env, tmp_path):
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = legacy_env.env(EP_API_URL=cluster.ep_url, EP_TOKEN=cluster.tokens["carol"],
                         PY_PIN=f"python=={sys.version_info[0]}.{sys.version_info[1]}")
    proc = subprocess.run([legacy_env.python, "-W", "error::UserWarning", str(script)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [ast.literal_eval(line[7:]) for line in proc.stdout.splitlines()
               if line.startswith("RESULT ")]
    assert results[1] == (7, 1000, False)  # computed in carol's pod, as uid 1000
    running = cluster.containers_of("carol")
    assert running["server"]["State"] == "running"
    assert podman.runs_image(running["server"]["Names"][0], cluster.images["server"])
