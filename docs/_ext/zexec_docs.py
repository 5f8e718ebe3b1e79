"""Sphinx extension: the reference pages' tables, generated from the code.

``{zexec-settings} ClassName`` renders one row per field of a settings class of
``zexec.settings``: its environment variable, type and default from the class itself,
its meaning from the README's configuration tables (the user-facing one-line text kept
for every variable by ``tests/unit/test_readme.py``). ``{zexec-cli} COMMAND`` renders
``zexec COMMAND --help``. ``tests/unit/test_docs.py`` checks that every settings class,
every field and every command is on the pages.
"""

from __future__ import annotations

import argparse
import os
import re
import typing
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings
from sphinx.util.docutils import SphinxDirective

README = Path(__file__).resolve().parents[2] / "README.md"


def settings_classes() -> dict[str, type[BaseSettings]]:
    """Every settings class of ``zexec.settings``, by name."""
    import zexec.settings as settings

    return {name: cls for name, cls in vars(settings).items()
            if isinstance(cls, type) and issubclass(cls, BaseSettings)
            and cls is not BaseSettings and cls.model_fields}


def _readme_rows() -> list[tuple[str, str, str]]:
    """(first cell, default, meaning) of every configuration table row of the README."""
    rows = []
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `ZEXEC_") and len(cells) >= 3:
            rows.append((cells[0], cells[1], cells[-1]))
    return rows


def readme_row(prefix: str, name: str, rows: list[tuple[str, str, str]] | None = None
               ) -> tuple[str, str]:
    """The README's (default, meaning) of ``prefix + NAME`` (rows may abbreviate a
    sibling of a full name as ``_NAME``); empty strings when it has no row."""
    full, short = f"`{prefix}{name.upper()}`", f"`_{name.upper()}`"
    for first, default, text in rows if rows is not None else _readme_rows():
        if full in first or (short in first and f"`{prefix}" in first):
            return default, text
    return "", ""


def _type(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in typing.get_args(annotation))
    if annotation is SecretStr:
        return "secret (string)"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: Any, documented: str) -> str:
    if field.default is PydanticUndefined:  # computed: as the README words it
        return documented or "computed"
    value = field.default
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return "empty" if value == "" else f"`{value}`"


def settings_rows(cls: type[BaseSettings]) -> list[tuple[str, str, str, str]]:
    """(variable, type, default, meaning) of each field of ``cls``."""
    prefix = cls.model_config["env_prefix"]
    rows = _readme_rows()
    out = []
    for name, field in cls.model_fields.items():
        default, text = readme_row(prefix, name, rows)
        out.append((f"{prefix}{name.upper()}", _type(field.annotation),
                    _default(field, default), text))
    return out


def settings_markdown(cls: type[BaseSettings]) -> str:
    doc = " ".join((cls.__doc__ or "").split())
    lines = [doc, "", "| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
    for var, kind, default, text in settings_rows(cls):
        cells = [f"`{var}`", kind, default, text]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def commands() -> dict[str, argparse.ArgumentParser]:
    """The ``zexec`` subcommands' parsers, by name."""
    from zexec.apps.cli.main import build_parser

    (sub,) = [a for a in build_parser()._actions
              if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def cli_markdown(command: str) -> str:
    parser = commands()[command]
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal: the same everywhere
    try:
        text = parser.format_help()
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    return "```text\n" + re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n```\n"


class SettingsDirective(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[Any]:
        classes = settings_classes()
        name = self.arguments[0]
        if name not in classes:
            raise self.error(f"no settings class {name!r} in zexec.settings")
        return self.parse_text_to_nodes(settings_markdown(classes[name]))


class CliDirective(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[Any]:
        name = self.arguments[0]
        if name not in commands():
            raise self.error(f"no zexec command {name!r}")
        return self.parse_text_to_nodes(cli_markdown(name))


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("zexec-settings", SettingsDirective)
    app.add_directive("zexec-cli", CliDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
