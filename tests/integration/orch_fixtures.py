"""Fixtures for the local orchestrator tests, imported by the test modules that use them
(not a conftest.py: other suites share this directory)."""

from __future__ import annotations

from pathlib import Path

import pytest
from orch_support import OFF, SECRET, STANDIN_SERVER

from zexec.adapters.orchestrator_local import LocalOrchestrator, discover_pythons, find_uv


@pytest.fixture(scope="session")
def pythons() -> dict[str, str]:
    return discover_pythons(find_uv())


@pytest.fixture(scope="session")
def standin(tmp_path_factory) -> tuple[list[str], Path]:
    """(server command, directory where each stand-in writes ``<user>.json``)."""
    d = tmp_path_factory.mktemp("standin")
    (d / "server.py").write_text(STANDIN_SERVER)
    (d / "reports").mkdir()
    return ["{python}", str(d / "server.py"), str(d / "reports")], d / "reports"


@pytest.fixture(scope="session")
def lite_dir(tmp_path_factory) -> Path:
    """State dir whose envs get no zexec installed: builds take well under a second."""
    return tmp_path_factory.mktemp("lite-state")


@pytest.fixture
def lite(lite_dir, standin, pythons):
    orch = LocalOrchestrator(
        lite_dir,
        "tcp://127.0.0.1:5560",
        SECRET,
        available_pythons=pythons,
        idle_timeout=0.3,
        server_command=standin[0],
        zexec_args=[],
        grace=0.5,
        isolation=OFF,
    )
    yield orch
    orch.close()
