"""The README's configuration tables cover every setting in src/zexec/settings.py (a new
setting without a row fails here), and its command table every ``zexec`` subcommand. Rows
may abbreviate ``ZEXEC_BROKER_BACKEND_PORT`` as ``_BACKEND_PORT`` after the full name of a
sibling, and ``zexec broker`` / ``server`` as `` / `server` `` after a sibling command."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

import zexec.settings as settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
CLASSES = [
    c
    for c in vars(settings).values()
    if isinstance(c, type) and issubclass(c, BaseSettings) and c is not BaseSettings
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_setting_has_a_row(cls):
    prefix = cls.model_config["env_prefix"]
    missing = [
        f"{prefix}{name.upper()}"
        for name in cls.model_fields
        if f"`{prefix}{name.upper()}`" not in README and f"`_{name.upper()}`" not in README
    ]
    assert not missing, f"README.md lacks rows for {missing}"


def test_every_command_has_a_row():
    import argparse

    from zexec.apps.cli.main import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    table = README[README.index("## The `zexec` command") :]
    missing = [
        cmd for cmd in sub.choices if f"| `zexec {cmd}" not in table and f"/ `{cmd}`" not in table
    ]
    assert not missing, f"README.md's command table lacks {missing}"
