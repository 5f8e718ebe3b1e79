"""Local code travels with the calls (a real broker and server, and a user's script in
its own directory, next to its own modules, which the server cannot import): the
modules it uses, imports or names with ``modules=``; and what cannot be pickled is named
with what to do."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.stack import Stack

REPO = Path(__file__).resolve().parents[2]

MODULES = {
    "mylib.py": """
        import pkgx.helpers as h

        def triple(x):
            return 3 * x

        class Point:
            def __init__(self, x):
                self.x = x

        def twice(x):
            return h.double(x)

        def version():
            return "v1"
    """,
    "pkgx/__init__.py": "",
    "pkgx/helpers.py": """
        from . import consts

        def double(x):
            return consts.TWO * x
    """,
    "pkgx/consts.py": "TWO = 2\n",
    "hidden.py": "def secret():\n    return 'found'\n",
}

SCRIPT = """
import importlib, json, pathlib, sys, threading
import zexec
from mylib import Point, triple

c = zexec.Client(sys.argv[1], sys.argv[2])
out = {}

def run(key, f):
    try:
        out[key] = f()
    except Exception as e:
        notes = "".join(getattr(e, "__notes__", []))
        out[key] = f"{type(e).__name__}: {e} {notes}"

@zexec.remote
def uses_a_global(x):
    return triple(x)

@zexec.remote
def imports_in_its_body(x):
    from mylib import twice
    return twice(x)

@zexec.remote
def takes_a_point(p):
    return [type(p).__name__, p.x + 1]

@zexec.remote(serializer="dill")
def with_dill(x):
    return triple(x)

@zexec.remote
def version():
    import mylib
    return mylib.version()

@zexec.remote
def hidden_import():
    return importlib.import_module("hid" + "den").secret()

lock = threading.Lock()
log = open(__file__)

@zexec.remote
def uses_a_lock():
    with lock:
        return 1

@zexec.remote
def reads_a_file():
    return log.read()

@zexec.remote
def identity(x):
    return x

run("global", lambda: uses_a_global(2))
run("body", lambda: imports_in_its_body(5))
run("point", lambda: takes_a_point(Point(41)))
run("dill", lambda: with_dill(3))
run("map", lambda: list(imports_in_its_body.map(range(5))))
run("v1", version)
src = pathlib.Path("mylib.py")
src.write_text(src.read_text().replace('"v1"', '"v2"'))
run("v2", version)  # the edited file, on the same warm worker
run("hidden", hidden_import)
run("hidden_shipped", lambda: hidden_import.options(modules=["hidden"])())
run("lock", uses_a_lock)
run("file", reads_a_file)
run("arg", lambda: identity({"conn": threading.Lock()}))
print(json.dumps(out))
c.close()
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("stack"))
    try:
        s.start_broker()
        s.start_server("alice", workers=1)
        home = tmp_path_factory.mktemp("user")  # the user's directory: their modules
        for name, text in MODULES.items():
            (home / name).parent.mkdir(parents=True, exist_ok=True)
            (home / name).write_text(textwrap.dedent(text))
        (home / "script.py").write_text(SCRIPT)
        done = subprocess.run([sys.executable, "script.py", s.frontend, s.tokens["alice"]],
                              cwd=home, capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(home)})
        assert done.returncode == 0, done.stderr
        yield json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        s.close()


def test_local_modules_travel_with_the_calls(results):
    assert results["global"] == 6  # a function of a local module, by value
    assert results["body"] == 10  # imported in the body: shipped, with its package
    assert results["point"] == ["Point", 42]  # an argument of a local class
    assert results["dill"] == 9  # dill pickles by reference: the module is shipped
    assert results["map"] == [0, 2, 4, 6, 8]  # batched .map ships them too
    assert (results["v1"], results["v2"]) == ("v1", "v2")  # an edited module is re-sent


def test_an_import_the_bytecode_does_not_show_says_to_use_modules(results):
    assert results["hidden"].startswith("ModuleNotFoundError")
    assert "'hidden' is your local code" in results["hidden"]
    assert "modules=['hidden']" in results["hidden"]
    assert results["hidden_shipped"] == "found"


def test_what_cannot_be_pickled_is_named_with_the_fix(results):
    assert results["lock"].startswith(
        "SerializationError: the global `lock` (a _thread.lock) captured by `uses_a_lock` "
        "cannot be pickled: create it inside the function")
    assert "the global `log` (an open file " in results["file"]
    assert "open the file inside the function" in results["file"]  # not a silent copy
    assert "`['conn']` (a _thread.lock) in argument 1 of `identity`" in results["arg"]
    assert "Traceback" not in results["lock"]
