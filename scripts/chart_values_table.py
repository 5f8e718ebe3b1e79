#!/usr/bin/env python3
"""Regenerate the values table of the chart README from values.yaml.

Each value's description is its ``# --`` comment in values.yaml (continued by the
comment lines that follow it); a value without one inherits its parent's (e.g. the
keys of ``securityContext``). The table between the ``## Values`` heading's
``| Value | Default | Description |`` header and the next blank line is replaced.

Usage: scripts/chart_values_table.py [CHART_DIR]   (default deploy/helm/zexec)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

HEADER = "| Value | Default | Description |\n|---|---|---|\n"


def descriptions(text: str) -> dict[str, str]:
    """Dotted value path -> its ``# --`` description."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped[1:].strip())
            continue
        m = re.match(r"^( *)([A-Za-z0-9_.-]+):", line)
        if not m or not stripped or line.lstrip().startswith("-"):
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        path = ".".join(k for _, k in stack)
        if pending is not None:
            out[path] = " ".join(pending)
            pending = None
    return out


def leaves(value, path=""):
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from leaves(v, f"{path}.{k}" if path else k)
    else:
        yield path, value


def table(chart: Path) -> str:
    text = (chart / "values.yaml").read_text()
    desc = descriptions(text)
    rows = []
    for path, default in leaves(yaml.safe_load(text)):
        parts = path.split(".")
        d = next((desc[".".join(parts[:i])] for i in range(len(parts), 0, -1)
                  if ".".join(parts[:i]) in desc), "")
        rows.append(f"| `{path}` | `{json.dumps(default)}` | {d} |\n")
    return HEADER + "".join(rows)


def main() -> None:
    chart = Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/helm/zexec")
    readme = chart / "README.md"
    text = readme.read_text()
    start = text.index(HEADER)
    end = text.index("\n\n", start) + 1
    readme.write_text(text[:start] + table(chart) + text[end:])


if __name__ == "__main__":
    main()
