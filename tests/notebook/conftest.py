"""Notebook tests: real IPython kernels against one real ``zexec up`` stack.

The stack (and alice's server, with numpy and pandas) is started once for all notebook
test modules; each module runs one kernel. Building the environment is the slow part the
first time (uv caches the packages for later runs).
"""

from __future__ import annotations

import json
import os

import pytest

import zexec
from tests.helpers.cli import zexec_cli
from tests.helpers.kernel import Kernel
from zexec.apps.client.connect import PYTHON

#: The requirements of alice's server in every notebook test (and in the examples).
REQUIREMENTS = ["numpy", "pandas"]


@pytest.fixture(scope="session")
def zexec_up(tmp_path_factory):
    """The state directory of a running ``zexec up`` stack whose alice has a ready
    server with REQUIREMENTS."""
    state = tmp_path_factory.mktemp("notebook-stack") / "state"
    zexec_cli("up", state=state)
    try:
        stack = json.loads((state / "stack.json").read_text())
        with zexec.connect(stack["ep_api_url"], stack["tokens"]["alice"]) as conn:
            conn.environment([f"python=={PYTHON}", *REQUIREMENTS], progress=False,
                             timeout=900)
        yield state
    finally:
        zexec_cli("down", state=state, check=False)


def kernel_env(state) -> dict[str, str]:
    """A user's environment: no zexec settings of ours, the stack's state directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEXEC_")}
    env["ZEXEC_STATE_DIR"] = str(state)
    return env


#: The first cell of a test notebook: connect as alice, as examples/ do.
CONNECT = f"""
import json, os, pathlib
import zexec
stack = json.loads((pathlib.Path(os.environ["ZEXEC_STATE_DIR"]) / "stack.json").read_text())
conn = zexec.connect(stack["ep_api_url"], stack["tokens"]["alice"])
status = conn.environment(["python=={PYTHON}", *{REQUIREMENTS!r}], progress=False)
"""


@pytest.fixture(scope="module")
def kernel(zexec_up, tmp_path_factory):
    """One kernel per module, connected as alice (``conn``)."""
    k = Kernel(kernel_env(zexec_up), str(tmp_path_factory.mktemp("kernel-cwd")))
    try:
        cell = k.run(CONNECT, timeout=300)
        assert cell.error is None, cell.error
        yield k
    finally:
        k.close()
