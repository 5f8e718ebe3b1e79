"""The layers of ``zexec`` as import rules, checked on the real import graph (grimp).

* ``zexec.core`` is pure: it imports nothing of zexec outside ``core`` (no adapter, app,
  plugin machinery, settings or notebook module).
* adapters import no app.
* no module imports itself back through any chain: no cycles anywhere in ``zexec``.

Imports under ``if TYPE_CHECKING:`` are left out: they never run. Imports inside a
function count: they run when it is called.
"""

from __future__ import annotations

import grimp
import pytest


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("zexec", cache_dir=None, exclude_type_checking_imports=True)


def _imports(graph: grimp.ImportGraph, prefix: str) -> list[tuple[str, str]]:
    return [(m, imported) for m in sorted(graph.modules)
            if m == prefix or m.startswith(prefix + ".")
            for imported in sorted(graph.find_modules_directly_imported_by(m))]


def core_violations(graph) -> list[tuple[str, str]]:
    return [(m, i) for m, i in _imports(graph, "zexec.core")
            if not (i == "zexec.core" or i.startswith("zexec.core."))]


def adapter_violations(graph) -> list[tuple[str, str]]:
    return [(m, i) for m, i in _imports(graph, "zexec.adapters")
            if i == "zexec.apps" or i.startswith("zexec.apps.")]


def cycles(graph) -> list[tuple[str, ...]]:
    return [(m, *graph.find_shortest_chain(importer=i, imported=m))
            for m, i in _imports(graph, "zexec")
            if graph.chain_exists(importer=i, imported=m)]


def test_core_imports_only_core(graph):
    assert core_violations(graph) == []


def test_adapters_import_no_app(graph):
    assert adapter_violations(graph) == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_the_rules_see_violations():
    """The checks are not vacuous: an arrow the wrong way is found by each of them."""
    g = grimp.build_graph("zexec", cache_dir=None, exclude_type_checking_imports=True)
    g.add_import(importer="zexec.core.model", imported="zexec.adapters.hugepages")
    g.add_import(importer="zexec.adapters.hugepages", imported="zexec.apps.guard")
    assert ("zexec.core.model", "zexec.adapters.hugepages") in core_violations(g)
    assert ("zexec.adapters.hugepages", "zexec.apps.guard") in adapter_violations(g)
    g.add_import(importer="zexec.core.errors", imported="zexec.core.catalog")
    assert ("zexec.core.catalog", "zexec.core.errors", "zexec.core.catalog") in cycles(g)
