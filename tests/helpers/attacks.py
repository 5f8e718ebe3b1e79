"""Helpers of the attack tests (tests/security) and the attack benchmark: a bystander
user calling through an attack, the broker's memory around it."""

from __future__ import annotations

import threading
import time

import zexec
from tests.helpers.procs import memory, reset_peak
from tests.helpers.stack import Stack

MIB = 1 << 20


def noop():
    return None


def assert_alive(s: Stack) -> None:
    assert s.broker.poll() is None, f"the broker died:\n{s.log('broker')}"


def bob_calls(s: Stack, n: int = 3, tls: bool = False) -> None:
    """``n`` calls of bob's on a fresh connection, all answered."""
    url, pin = (s.secure_frontend, s.tls_pin) if tls else (s.frontend, None)
    with zexec.Client(url, s.tokens["bob"], tls_pin=pin, connect_timeout=10,
                      liveness_timeout=10) as c:
        for i in range(n):
            assert c.call(lambda x: x + 1, i) == i + 1


class Bystander:
    """Bob calling in a loop on one connection while an attack runs: every call must be
    answered; how many were is reported, how fast is the benchmark's business."""

    def __init__(self, s: Stack) -> None:
        self.client = zexec.Client(s.frontend, s.tokens["bob"], connect_timeout=20,
                                   liveness_timeout=20)
        self.client.call(noop)
        self.done = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.call(noop)
                self.done += 1
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
                return
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.client.close()
        assert not self.errors, f"bob's calls failed during the attack: {self.errors!r}"
        assert self.done > 0, "bob got no call answered during the attack"


class MemoryWatch:
    """The broker's RSS before an attack and its peak (VmHWM) during it."""

    def __init__(self, s: Stack) -> None:
        self.pid = s.broker.pid
        self.idle = memory(self.pid)
        reset_peak(self.pid)

    @property
    def growth(self) -> int:
        return memory(self.pid, "VmHWM") - self.idle
