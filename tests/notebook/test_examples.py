"""The example notebooks in examples/, executed with nbclient against a real ``zexec up``
stack as a user would run them, with assertions on what their cells show."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers.kernel import plain
from tests.notebook.conftest import kernel_env

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(name: str, state, tmp_path) -> dict[str, dict]:
    """Execute examples/NAME; returns each cell (by id) with ``stdout`` and ``text``
    (its result's text/plain) for the assertions."""
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=kernel_env(state), cwd=str(tmp_path))
    cells = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outs = cell.outputs
        cells[cell.id] = {
            "stdout": "".join(o.get("text", "") for o in outs
                              if o.output_type == "stream" and o.name == "stdout"),
            "text": "".join(o.data.get("text/plain", "") for o in outs
                            if o.output_type == "execute_result"),
            "html": "".join(o.data.get("text/html", "") for o in outs
                            if o.output_type == "execute_result"),
            "displays": [o.data for o in outs if o.output_type == "display_data"],
            "error": next((dict(o, text=plain("\n".join(o.traceback))) for o in outs
                           if o.output_type == "error"), None),
        }
    return cells


@pytest.fixture
def common(zexec_up, tmp_path):
    def check(cells):
        assert cells["connect"]["text"].startswith("<zexec.Connection alice @ tcp://")
        assert "plain (loopback" in cells["connect"]["html"]
        assert cells["environment"]["text"].startswith("<zexec.Status server of alice: ready")
        return cells

    return lambda name: check(run(name, zexec_up, tmp_path))


def test_quickstart(common):
    cells = common("quickstart.ipynb")
    assert cells["define"]["text"] == "<zexec.RemoteFunction where_am_i(greeting)>"
    assert re.match(r"hello from process \d+ on ", cells["call"]["stdout"])
    assert cells["call"]["text"] == "True"
    assert cells["map"]["text"] == str(sum(x ** 3 for x in range(1000)))
    assert cells["remote-cell"]["stdout"] == "averaged 1000000 numbers remotely\n"
    assert cells["mean"]["text"] == "0.5"
    assert cells["status"]["text"].startswith("<zexec.Connection alice @ tcp://")
    assert "ready" in cells["status"]["html"]


def test_data_science(common):
    cells = common("data-science.ipynb")
    assert cells["numpy"]["text"] == "((4, 3), True, True)"
    assert cells["pandas"]["stdout"] == "simulated 1095 rows\n"
    assert re.search(r"site\s+\n?east\s+365", cells["pandas"]["text"].replace("count  mean"
                                                                               "   max", ""))
    assert "<table" in cells["pandas"]["html"]
    assert cells["pandas-check"]["text"] == "(['east', 'north', 'south'], 1095)"
    assert cells["map"]["text"] == "(8, True)"


def test_errors_and_debugging(common):
    cells = common("errors-and-debugging.ipynb")
    err = cells["fail"]["error"]
    assert err["ename"] == "AssertionError"
    assert re.search(r"Cell In\[\d+\], line 9, in check\(scaled\)\n(.*\n)*----> 9     assert "
                     r"worst < 0\.5", err["text"])
    assert "session.py" not in err["text"] and "concurrent" not in err["text"]
    assert cells["post-mortem"]["text"] == "('check', 0.909)"
    shown = cells["reprs"]["text"]
    assert "'lock': '<unlocked _thread.lock object" in shown
    assert "'big': \"b'\\\\x00\\\\x00" in shown  # 10 MB: its remote repr, not the value
    assert cells["timeout"]["stdout"].startswith("CallTimeout - ")


def test_long_jobs(common):
    cells = common("long-jobs.ipynb")
    assert cells["submit"]["stdout"].startswith("submitted; the notebook is free\n")
    # The job printed while "meanwhile" ran: none of it landed there.
    assert cells["meanwhile"]["stdout"] == "meanwhile, another cell runs\n"
    assert cells["meanwhile"]["text"] == "'converged'"
    (bar,) = cells["map"]["displays"]
    assert re.match(r"measure: +\d+%.*/20 ", bar["text/plain"])
    assert cells["map"]["text"] == "361"
    assert cells["cancel"]["text"] == "(True, True)"
    out = cells["timeout"]["stdout"]
    assert out.startswith("step 1/100\n") and "\nstopped: " in out and "timeout" in out
