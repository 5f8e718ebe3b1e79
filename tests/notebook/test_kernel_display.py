"""Rich display, progress bars and magics as a notebook user meets them: a real IPython
kernel against a real ``zexec up`` stack."""

from __future__ import annotations

import re

SLOW = '''\
@zexec.remote
def slow(x):
    "Square slowly."
    import time
    time.sleep(0.15)
    return x * x
'''


def one_line(cell) -> str:
    text = cell.result["text/plain"]
    assert "\n" not in text
    return text


def test_remote_function_shows_its_signature_doc_and_cell(kernel):
    define = kernel.run(SLOW + "slow")
    number = define.reply["execution_count"]
    assert one_line(define) == "<zexec.RemoteFunction slow(x)>"
    page = define.result["text/html"]
    assert "remote function <code>slow(x)</code>" in page and "Square slowly." in page
    assert f"Cell In[{number}], line 1" in page
    assert re.search(r"runs on</th><td[^>]*>tcp://127\.0\.0\.1:\d+<", page)
    options = one_line(kernel.run("slow.options(timeout=30)"))
    assert options == "<zexec.RemoteFunction slow(x) timeout=30>"


def test_connection_shows_user_broker_encryption_and_server(kernel):
    cell = kernel.run("conn")
    assert re.fullmatch(r"<zexec.Connection alice @ tcp://127\.0\.0\.1:\d+ \(loopback\); "
                        r"server of alice: ready, since \d+s ago, python 3\.\d+ \+ numpy, "
                        r"pandas>", one_line(cell))
    page = cell.result["text/html"]
    for part in ("zexec connection", "alice", "plain (loopback", "&#9679;</span> ready",
                 "python 3."):
        assert part in page, part


def test_environment_status_is_a_line_and_a_table(kernel):
    cell = kernel.run("conn.environment(['numpy', 'pandas'], progress=False)")
    assert one_line(cell).startswith("<zexec.Status server of alice: ready")
    page = cell.result["text/html"]
    assert "<code>numpy</code>, <code>pandas</code>" in page and "ready" in page
    same = kernel.run("st = conn.status(); st['phase'], isinstance(st, dict)")
    assert same.result["text/plain"] == "('ready', True)"


def test_a_long_map_shows_a_progress_bar_and_a_quick_one_none(kernel):
    kernel.run(SLOW)
    long = kernel.run("squares = list(slow.map(range(12), batch_size=1)); squares[-1]")
    assert long.result["text/plain"] == "121"
    (bar,) = [o["content"]["data"] for o in long.outputs if o["type"] == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in bar  # tqdm's notebook widget
    assert re.match(r"slow: +\d+%\|.*\| \d+/12 ", bar["text/plain"])
    quick = kernel.run("list(slow.map(range(3), batch_size=1))")
    assert quick.result["text/plain"] == "[0, 1, 4]"
    assert [o["type"] for o in quick.outputs] == ["execute_result"]  # no bar, no text
    forced = kernel.run("list(slow.map(range(2), batch_size=1, progress=True))")
    assert any(o["type"] == "display_data" for o in forced.outputs)
    never = kernel.run("len(list(slow.map(range(12), batch_size=1, progress=False)))")
    assert [o["type"] for o in never.outputs] == ["execute_result"]


def test_remote_cell_magic_runs_there_and_brings_variables_back(kernel):
    assert kernel.run("%load_ext zexec").error is None
    kernel.run("base = 10\nimport os\nlocal = os.getpid()")
    cell = kernel.run("%%remote total pid\nimport os\ntotal = base + 5\npid = os.getpid()\n"
                      "print('remote prints', pid != local)\ntotal * 2")
    assert cell.error is None, cell.error
    assert cell.stdout == "remote prints True\n"
    assert cell.result["text/plain"] == "30"
    back = kernel.run("total, pid != local")
    assert back.result["text/plain"] == "(15, True)"


def test_remote_cell_magic_errors_name_the_problem(kernel):
    kernel.run("%load_ext zexec")
    failing = kernel.run("%%remote\nratio = 1\nratio / 0")
    err = failing.error
    assert err["ename"] == "ZeroDivisionError"
    assert re.search(r"Cell In\[\d+\], line 3\n      1 %%remote\n      2 ratio = 1\n"
                     r"----> 3 ratio / 0", err["text"])
    unsendable = kernel.run("%%remote\nconn.status()")
    assert "UsageError: %%remote: the notebook variable 'conn' cannot be sent" \
        in unsendable.stderr
    missing = kernel.run("%%remote never_defined\nx = 1")
    assert missing.error["ename"] == "NameError"
    assert "did not define 'never_defined'" in missing.error["evalue"]


def test_zexec_status_magic(kernel):
    kernel.run("%load_ext zexec")
    cell = kernel.run("%zexec status")
    assert one_line(cell).startswith("<zexec.Connection alice @ tcp://")
    assert "zexec connection" in cell.result["text/html"]
    usage = kernel.run("%zexec")
    assert "UsageError: usage: %zexec status" in usage.stderr
