"""Fixtures for the execution-path integration tests."""

from __future__ import annotations

import pytest

from tests.helpers.stack import Stack


@pytest.fixture
def stack(tmp_path):
    """A fresh broker (static tokens for alice, bob, carol) with alice's server running."""
    s = Stack(tmp_path)
    s.start_broker()
    s.start_server("alice")
    yield s
    s.close()


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory):
    """One broker + alice's server shared by a module's tests (faster; tests must not
    break it)."""
    s = Stack(tmp_path_factory.mktemp("stack"))
    s.start_broker()
    s.start_server("alice")
    yield s
    s.close()
