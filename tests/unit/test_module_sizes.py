"""No module of zexec over 450 lines: a module that grows past it holds more than one
concern and is split by concern (see docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

import zexec

LIMIT = 450


def test_no_module_is_over_the_limit():
    root = Path(zexec.__file__).parent
    sizes = {str(path.relative_to(root)): len(path.read_text().splitlines())
             for path in root.rglob("*.py")}
    assert len(sizes) > 50  # the whole package was read
    assert {name: n for name, n in sizes.items() if n > LIMIT} == {}
