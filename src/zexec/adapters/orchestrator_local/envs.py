"""Virtual environments built once per EnvSpec digest with ``uv`` and reused.

Layout: ``<root>/<digest>/`` is the venv; ``<root>/<digest>/.zexec-complete`` is written
last, so a directory without it (a crash or a terminate mid-build) is rebuilt rather
than trusted; ``<root>/<digest>.lock`` (``flock``) lets one builder work on a digest at a
time, across threads and processes sharing the state directory. Every env gets the zexec
this process runs, as a wheel built from it (:mod:`.wheel`) into ``zexec-wheels/`` beside
``<root>``: no package index is asked for zexec. The marker records which wheel (its
path holds the content hash): a different zexec (upgrade, edited checkout) forces a
rebuild.

Requirements reach uv as a file passed with ``-r``: they are data, and every command is
an argument list, never a shell line.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

from zexec.core.envspec import requirements_text
from zexec.core.model import EnvSpec

MARKER = ".zexec-complete"
REQUIREMENTS = "zexec-requirements.txt"

#: Runs one command for the build (output to the user's log); returns the exit status.
#: Raises if the build was cancelled meanwhile.
Runner = Callable[[Sequence[str]], int]


class BuildFailed(Exception):
    """A build step exited non-zero; the message says which."""


WHEELS = "zexec-wheels"


class EnvStore:
    """Builds and finds per-digest virtual environments under ``root``.

    ``zexec_args`` is what ``uv pip install`` gets for zexec itself (default: the wheel
    of the running zexec, built on first use; tests pass ``[]`` with a stand-in server).
    """

    def __init__(self, root: Path, uv: str, zexec_args: Sequence[str] | None = None) -> None:
        self.root = root
        self.uv = uv
        self._zexec_args = list(zexec_args) if zexec_args is not None else None
        self._wheel_lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    @property
    def zexec_args(self) -> list[str]:
        with self._wheel_lock:  # one build, however many users' threads ask at once
            if self._zexec_args is None:
                from zexec.adapters.orchestrator_local.wheel import build_wheel

                self._zexec_args = [str(build_wheel(self.root.with_name(WHEELS)))]
            return self._zexec_args

    def path(self, spec: EnvSpec) -> Path:
        return self.root / spec.digest

    def python(self, spec: EnvSpec) -> Path:
        return self.path(spec) / "bin" / "python"

    def _marker(self, spec: EnvSpec, interpreter: str) -> dict[str, object]:
        return {
            "digest": spec.digest,
            "python": spec.python,
            "interpreter": interpreter,
            "zexec": self.zexec_args,
        }

    def is_complete(self, spec: EnvSpec, interpreter: str) -> bool:
        try:
            got = json.loads((self.path(spec) / MARKER).read_text())
        except (OSError, ValueError):
            return False
        return got == self._marker(spec, interpreter) and self.python(spec).exists()

    @contextmanager
    def locked(self, spec: EnvSpec, wait: Callable[[float], bool]):
        """Hold the digest's build lock (another user may be building the same env).
        ``wait(seconds)`` sleeps and returns True if the caller was cancelled meanwhile,
        which raises :class:`BuildCancelled` instead of waiting on."""
        with open(self.root / f"{spec.digest}.lock", "a+b") as f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if wait(0.1):
                        raise BuildCancelled() from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def build(self, spec: EnvSpec, interpreter: str, run: Runner) -> Path:
        """Create the env (unless complete already; call under :meth:`locked`)."""
        env = self.path(spec)
        if self.is_complete(spec, interpreter):
            return env
        if env.exists():
            shutil.rmtree(env)
        steps = [
            [self.uv, "venv", "--no-project", "--python", interpreter, str(env)],
            None,  # the install step, once the venv (and its directory) exists
        ]
        for step in steps:
            if step is None:
                reqs = env / REQUIREMENTS
                reqs.write_text(requirements_text(spec), encoding="utf-8")
                step = [
                    # Bytecode compiled once here, not by every server start (machines
                    # with PYTHONDONTWRITEBYTECODE would otherwise compile each time).
                    self.uv, "pip", "install", "--compile-bytecode",
                    "--python", str(self.python(spec)), "-r", str(reqs), *self.zexec_args,
                ]  # fmt: skip
            code = run(step)
            if code != 0:
                raise BuildFailed(f"uv {' '.join(step[1:3])} exited with status {code}")
        tmp = env / f"{MARKER}.tmp"
        tmp.write_text(json.dumps(self._marker(spec, interpreter)))
        os.replace(tmp, env / MARKER)
        return env


class BuildCancelled(Exception):
    """The server was terminated or replaced while its environment was being built."""
