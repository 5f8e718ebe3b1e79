"""Tracebacks, ``%debug`` and output routing as a notebook user meets them: a real IPython
kernel against a real ``zexec up`` stack."""

from __future__ import annotations

import re

ZEXEC_INTERNALS = ("session.py", "concurrent", "api.py", "remote_errors.py",
                   "tracebacks.py", "site-packages/zexec", "src/zexec")

DEFINE = '''\
@zexec.remote
def normalise(values):
    total = sum(values)
    scaled = [v / total for v in values]
    return check(scaled)

def check(scaled):
    worst = max(scaled)
    assert worst < 0.5, f"one value dominates: {worst:.2f}"
    return scaled
'''


def test_a_remote_error_shows_the_cells_and_lines_and_no_zexec_frames(kernel):
    define = kernel.run(DEFINE)
    number = define.reply["execution_count"]
    cell = kernel.run("normalise([1, 2, 30])")
    err = cell.error
    assert err["ename"] == "AssertionError"
    text = err["text"]
    assert "----> 1 normalise([1, 2, 30])" in text
    assert f"Cell In[{number}], line 5, in normalise(values)" in text
    assert "----> 5     return check(scaled)" in text
    assert f"Cell In[{number}], line 9, in check(scaled)" in text
    assert '      8     worst = max(scaled)\n----> 9     assert worst < 0.5, f"one' in text
    assert not any(part in text for part in ZEXEC_INTERNALS), text
    # IPython coloured it: the raw traceback has colour codes around the remote lines.
    raw = "\n".join(err["traceback"])
    assert any("\x1b[" in line and "worst < " in line for line in raw.splitlines())


def test_debug_opens_the_remote_frame_with_its_locals(kernel):
    kernel.run(DEFINE)
    assert kernel.run("normalise([1, 2, 30])").error is not None
    cell = kernel.run("%debug", stdin=["p worst", "p scaled[:2]", "up", "p total", "q"])
    out = re.sub(r"\x1b\[[0-9;]*m", "", cell.stdout)
    assert "0.9090909090909091" in out  # worst, in check()
    assert "[0.030303030303030304, 0.06060606060606061]" in out
    assert "\n33\n" in out  # total, one frame up, in normalise()
    assert "assert worst < 0.5" in out  # pdb shows the remote frame's source


def test_zexec_debug_keeps_zexecs_frames(kernel):
    kernel.run(DEFINE)
    kernel.run("%env ZEXEC_DEBUG=1")
    try:
        text = kernel.run("normalise([1, 2, 30])").error["text"]
    finally:
        kernel.run("%env ZEXEC_DEBUG=")
    assert "session.py" in text and "Cell In[" in text


def test_output_of_a_submit_lands_in_its_own_cell_while_another_runs(kernel):
    kernel.run('''
@zexec.remote
def chatty(n):
    import time
    for i in range(n):
        print(f"tick {i}", flush=True)
        time.sleep(0.25)
    return "done"
''')
    first = kernel.start("future = chatty.submit(8)\nprint('submitted')")
    second = kernel.start("print('second cell waits'); print(future.result())")
    kernel.wait(first)
    two = kernel.wait(second)
    one = kernel.cell(first)
    assert two.stdout == "second cell waits\ndone\n"
    assert one.stdout == "submitted\n" + "".join(f"tick {i}\n" for i in range(8))
    late = [o for o in one.outputs if o["at"] > kernel.finished[first]]
    assert late and "tick 7" in late[-1]["text"]  # printed after its cell had finished


def test_output_keeps_its_order_with_the_cells_own_prints(kernel):
    cell = kernel.run('''
@zexec.remote
def shout(word):
    print(f"remote {word}")
    import sys; print("remote err", file=sys.stderr)

print("local before")
shout("hi")
print("local after")
''')
    assert cell.stdout == "local before\nremote hi\nlocal after\n"
    assert cell.stderr == "remote err\n"
