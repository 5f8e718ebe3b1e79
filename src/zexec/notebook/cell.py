"""The server side of ``%%remote``: run a cell's code in a fresh namespace and hand back
the variables asked for. Imported on the user's server (shipped by reference), so it
imports nothing of IPython."""

from __future__ import annotations

import ast
import builtins
from typing import Any


def run_cell(source: str, filename: str, inputs: dict[str, Any],
             names: list[str]) -> tuple[dict[str, Any], Any]:
    """Run ``source`` (compiled as ``filename``, the notebook's name for the cell, so its
    frames show as the cell) with the notebook variables ``inputs`` as globals; return
    the variables ``names`` it left and the value of its last line when that is an
    expression (what a cell shows as ``Out``)."""
    tree = ast.parse(source, filename)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    namespace = {"__name__": "__main__", "__builtins__": builtins, **inputs}
    exec(compile(tree, filename, "exec"), namespace)
    value = None
    if last is not None:
        value = eval(compile(ast.Expression(last.value), filename, "eval"), namespace)
    missing = [n for n in names if n not in namespace]
    if missing:
        raise NameError(f"%%remote: the cell did not define {', '.join(map(repr, missing))}")
    return {n: namespace[n] for n in names}, value


def names_read(source: str) -> set[str]:
    """The names ``source`` reads (anywhere, nested functions included): the notebook
    variables it may need."""
    return {node.id for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
