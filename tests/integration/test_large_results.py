"""1 GiB results through the broker on a loaded machine (issue 11, point 5, which is
broker liveness): while a large frame is in transit, its bytes count as the server's
liveness, so a transfer in progress is never a dead server, whether the result comes on
the worker's own connection (direct dispatch) or through the server (fresh worker per
call). And a frame beyond the broker's documented limit fails with an error naming it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import zexec
from tests.helpers.remote_funcs import filled
from tests.helpers.stack import Stack

GIB = 1 << 30


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fresh", [False, True], ids=["direct", "through-the-server"])
def test_1gib_results_with_a_cpu_hog_beside(tmp_path, fresh):
    s = Stack(tmp_path)
    hog = None
    try:
        s.start_broker()
        s.start_server("alice", workers=1,
                       **({"ZEXEC_SERVER_FRESH_PROCESS": "1"} if fresh else {}))
        # Busy work on the machine's other core (it has two): everything here shares one.
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        with zexec.Client(s.frontend, s.tokens["alice"]) as c:  # the default liveness
            for value in (1, 2, 3) if not fresh else (1, 2):
                result = c.call(filled, GIB, value)
                assert result.nbytes == GIB
                assert int(result[:: 1 << 16].sum()) == value * (GIB >> 16)
                assert result[-1] == value
                del result
        assert "dropped" not in s.log("broker")  # the server was never taken for dead
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
        s.close()


def test_frames_beyond_the_limit_fail_naming_it(tmp_path):
    s = Stack(tmp_path, extra_broker_env={"ZEXEC_BROKER_MAX_FRAME_BYTES": str(16 << 20)})
    try:
        s.start_broker()
        s.start_server("alice", workers=1)
        with zexec.Client(s.frontend, s.tokens["alice"]) as c:
            # A result over the limit: the call ends with the limit's name.
            with pytest.raises(zexec.TooLarge, match="ZEXEC_BROKER_MAX_FRAME_BYTES"):
                c.call(filled, 32 << 20)
            # An argument over the limit: the same.
            with pytest.raises(zexec.TooLarge, match="ZEXEC_BROKER_MAX_FRAME_BYTES"):
                c.call(len, np.zeros(32 << 20, dtype=np.uint8))
            # Below it, both ways, on the same connection.
            assert c.call(len, np.zeros(8 << 20, dtype=np.uint8)) == 8 << 20
            assert c.call(filled, 8 << 20).nbytes == 8 << 20
    finally:
        s.close()
