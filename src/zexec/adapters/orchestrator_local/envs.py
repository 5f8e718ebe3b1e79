"""Virtual environments built once per EnvSpec digest with ``uv`` and reused.

Layout: ``<root>/<digest>/`` is the venv; ``<root>/<digest>/.zexec-complete`` is written
last, so a directory without it (a crash or a terminate mid-build) is rebuilt rather
than trusted; ``<root>/<digest>.lock`` (``flock``) lets one builder work on a digest at a
time, across threads and processes sharing the state directory. The marker also records
which zexec was installed: a different one (upgrade, other source tree) forces a rebuild.

Requirements reach uv as a file passed with ``-r``: they are data, and every command is
an argument list, never a shell line.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from importlib import metadata
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


def zexec_install_args() -> list[str]:
    """What to install so the env can run ``python -m zexec.apps.server``: the source
    tree this zexec runs from, editable (so a developer's env never runs stale server
    code), else the installed distribution's exact version from the index."""
    # From this file, not zexec.__file__: that is None when zexec is imported as a
    # namespace package (a source tree on sys.path without the package installed).
    root = Path(__file__).resolve().parents[4]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "zexec"' in pyproject.read_text("utf-8", "replace"):
        return ["-e", str(root)]
    return [f"zexec=={metadata.version('zexec')}"]


class EnvStore:
    """Builds and finds per-digest virtual environments under ``root``."""

    def __init__(self, root: Path, uv: str, zexec_args: Sequence[str] | None = None) -> None:
        self.root = root
        self.uv = uv
        self.zexec_args = list(zexec_args) if zexec_args is not None else zexec_install_args()
        root.mkdir(parents=True, exist_ok=True)

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
                raise BuildFailed(f"{' '.join(step[1:3])} exited with status {code}")
        tmp = env / f"{MARKER}.tmp"
        tmp.write_text(json.dumps(self._marker(spec, interpreter)))
        os.replace(tmp, env / MARKER)
        return env


class BuildCancelled(Exception):
    """The server was terminated or replaced while its environment was being built."""
