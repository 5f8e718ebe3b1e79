"""Reprs and progress bars outside a kernel: one-line text, HTML that escapes what came
from elsewhere, and the map progress bar's modes."""

from __future__ import annotations

import time

import pytest

import zexec
from zexec.apps.client.progress import map_progress
from zexec.apps.client.status import Status
from zexec.notebook import html

HOSTILE = '<script>alert("x")</script>'


def status(**changes):
    base = {"phase": "failed", "user": "alice", "since": time.time() - 5,
            "reason": f"build failed {HOSTILE}", "log_tail": ["ok", HOSTILE],
            "env": {"python": "3.11", "requirements": [f"numpy{HOSTILE}"], "digest": "ab" * 16}}
    return {**base, **changes}


def test_html_escapes_everything_that_came_from_elsewhere():
    for page in (html.status_html(status()),
                 html.connection_html(HOSTILE, HOSTILE, True, HOSTILE, status()),
                 html.connection_html("a", "b", False, "c", None, error=HOSTILE),
                 html.function_html(HOSTILE, "(x)", HOSTILE, HOSTILE, {"k": HOSTILE}, HOSTILE)):
        assert "<script>" not in page and "&lt;script&gt;" in page


def test_status_is_a_dict_shown_as_one_line_and_a_table():
    plain = status(phase="ready", reason="", log_tail=[])
    st = Status(plain)
    assert st["phase"] == "ready" and st == plain and isinstance(st, dict)
    line = repr(st)
    assert line.startswith("<zexec.Status server of alice: ready, since 5s ago, python 3.11")
    assert "\n" not in line
    page = st._repr_html_()
    assert "&#9679;</span> ready" in page and "log" not in page  # no log once ready
    failed = Status(status())._repr_html_()
    assert "<th" in failed and "&lt;script&gt;" in failed and "build failed" in failed
    assert "no server" == html.status_line(None)


def test_remote_function_repr_without_any_client():
    @zexec.remote(timeout=3)
    def f(a, b=2):
        """Add.

        More text."""
        return a + b

    assert repr(f) == "<zexec.RemoteFunction test_remote_function_repr_without_any_client." \
                      "<locals>.f(a, b=2) timeout=3>"
    page = f._repr_html_()
    assert "Add." in page and "More text" not in page and "3 s" in page
    assert __file__ in page


def test_map_progress_modes(capsys):
    assert list(map_progress(iter([1, 2, 3]), 3, "f", False)) == [1, 2, 3]
    assert list(map_progress(iter([1, 2, 3]), 3, "f", None)) == [1, 2, 3]
    assert capsys.readouterr().err == ""  # stderr is no terminal here: no bar
    assert list(map_progress(iter([1, 2, 3]), 3, "f", True)) == [1, 2, 3]
    err = capsys.readouterr().err
    assert "f: 100%" in err and "3/3" in err


def test_map_progress_bar_closes_when_the_map_fails(capsys):
    def failing():
        yield 1
        raise ValueError("item 2")

    with pytest.raises(ValueError):
        list(map_progress(failing(), 5, "f", True))
    assert "1/5" in capsys.readouterr().err


def test_the_table_shows_the_resources_the_server_got():
    got = {"cpus": 1.5, "memory": None, "gpus": 0, "workers": 2, "note": f"memory {HOSTILE}"}
    page = html.status_html(status(phase="ready", resources=got))
    assert "cpus 1.5, memory not bounded, gpus 0, workers 2" in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "resources" not in html.status_html(status())  # an orchestrator that says nothing
