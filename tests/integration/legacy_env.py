"""A virtual environment holding the released legacy clients, for the tests that run them.

``scidx-rexec==0.1.0`` (import ``rexec``) and ``ndp-ep==0.9.0`` (import ``ndp_ep``) pin
dill, pyzmq, packaging and cryptography to versions that clash with zexec's own, so they
live in their own venv, built once with ``uv`` and reused by later sessions (a marker
file records what was installed, and an import check proves it still works). Its Python
is the one running the tests, so pickled functions cross to zexec's workers (same
major.minor). Used through ``pytest_plugins = ["legacy_env"]`` by the modules that need it.

The build is bounded in time; if it fails, the tests fail (not skip) with uv's output.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from zexec.adapters.orchestrator_local import find_uv

LEGACY_PACKAGES = ("scidx-rexec==0.1.0", "ndp-ep==0.9.0")
REPO = Path(__file__).resolve().parents[2]
#: ``.state/`` is git-ignored. ``ZEXEC_LEGACY_VENV`` points elsewhere if wanted.
DEFAULT_DIR = REPO / ".state" / "legacy-venv"
MARKER = ".zexec-legacy-ok"
#: Upper bound for each uv step (creating the venv, installing into it).
STEP_TIMEOUT = float(os.environ.get("ZEXEC_LEGACY_VENV_TIMEOUT", "600"))
IMPORT_CHECK = "import rexec.client_api, rexec.exec_stream, ndp_ep, dill, zmq"


@dataclass(frozen=True)
class LegacyEnv:
    """The legacy venv: ``python`` runs scripts with the released clients importable."""

    root: Path
    python: str

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for a legacy client process (no zexec settings, no
        PYTHONPATH pointing into this repo)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ZEXEC_", "PYTHON", "VIRTUAL_ENV"))}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env


def _fingerprint() -> dict[str, str]:
    return {
        "packages": " ".join(LEGACY_PACKAGES),
        "python": ".".join(map(str, sys.version_info[:3])),
        "base": os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
    }


def _venv_python(root: Path) -> Path:
    return root / "bin" / "python"


def _usable(root: Path) -> bool:
    marker = root / MARKER
    try:
        if json.loads(marker.read_text()) != _fingerprint():
            return False
    except (OSError, ValueError):
        return False
    try:
        check = subprocess.run([str(_venv_python(root)), "-c", IMPORT_CHECK],
                               capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return check.returncode == 0


def _run_step(cmd: list[str], what: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env["UV_PYTHON_DOWNLOADS"] = "never"  # use the interpreter we name, fetch none
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT,
                              env=env)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        pytest.fail(f"{what} did not finish within {STEP_TIMEOUT:g}s: {' '.join(cmd)}\n{out}",
                    pytrace=False)
    except OSError as exc:
        pytest.fail(f"{what} could not start: {' '.join(cmd)}: {exc}", pytrace=False)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        pytest.fail(f"{what} failed (exit {done.returncode}): {' '.join(cmd)}\n{output}",
                    pytrace=False)
    return output


def ensure_legacy_venv(root: Path = DEFAULT_DIR) -> LegacyEnv:
    """Build the legacy venv at ``root`` unless a working one is there already."""
    root.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (two pytest runs at once would otherwise race on the dir).
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _usable(root):
            shutil.rmtree(root, ignore_errors=True)
            uv = find_uv()
            log = _run_step([uv, "venv", "--python", sys.executable, str(root)],
                            "creating the legacy venv")
            log += _run_step([uv, "pip", "install", "--python", str(_venv_python(root)),
                              *LEGACY_PACKAGES], "installing the legacy clients")
            check = subprocess.run([str(_venv_python(root)), "-c", IMPORT_CHECK],
                                   capture_output=True, text=True, timeout=60)
            if check.returncode != 0:
                pytest.fail("the legacy clients do not import after installing them:\n"
                            f"{check.stdout}{check.stderr}\nuv said:\n{log}", pytrace=False)
            (root / MARKER).write_text(json.dumps(_fingerprint()))
    return LegacyEnv(root, str(_venv_python(root)))


@pytest.fixture(scope="session")
def legacy_env() -> LegacyEnv:
    """The released ``rexec`` / ``ndp_ep`` clients in their own venv (built on first use)."""
    return ensure_legacy_venv(Path(os.environ.get("ZEXEC_LEGACY_VENV", DEFAULT_DIR)))
