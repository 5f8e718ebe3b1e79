"""Finding ``uv`` and the Python interpreters present on this machine.

A user's ``python==X.Y`` pin must name an interpreter that already exists here: the
local orchestrator never downloads one (that would be slow, surprising, and a way for a
user to make the host fetch binaries). Discovery asks each candidate for its own
version rather than trusting file names, because shims (pyenv) may exist for versions
that are not actually usable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_VERSIONED = re.compile(r"python3\.\d+")
# _base_executable: for a venv's python, the interpreter it was made from.
_PROBE = (
    "import sys; print('%d.%d' % sys.version_info[:2]); "
    "print(getattr(sys, '_base_executable', '') or sys.executable)"
)


def find_uv() -> str:
    """The ``uv`` binary: the ``uv`` Python package's, next to this interpreter, or on
    PATH. Raises FileNotFoundError when there is none."""
    try:
        from uv import find_uv_bin  # type: ignore[import-not-found]

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    sibling = Path(sys.executable).parent / "uv"
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return str(sibling)
    found = shutil.which("uv")
    if found is None:
        raise FileNotFoundError(
            "uv not found: it comes with zexec's server extra "
            "(pip install 'zexec[server]'), or put a uv binary on PATH"
        )
    return found


def probe(interpreter: str, timeout: float = 15.0) -> tuple[str, str] | None:
    """``(major.minor, executable)`` of ``interpreter``, or None if it does not run."""
    try:
        out = subprocess.run(
            [interpreter, "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or not re.fullmatch(r"\d+\.\d+", lines[0]):
        return None
    return lines[0], lines[1]


def running_python() -> tuple[str, str]:
    """``(major.minor, executable)`` of the interpreter running zexec: what :func:`probe`
    reports for it, without starting a process."""
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return here, getattr(sys, "_base_executable", "") or sys.executable


def _path_candidates() -> list[str]:
    seen: list[str] = []
    for d in os.environ.get("PATH", "").split(os.pathsep):
        try:
            names = sorted(os.listdir(d or "."))
        except OSError:
            continue
        seen += [os.path.join(d, n) for n in names if _VERSIONED.fullmatch(n)]
    return seen


def _uv_candidates(uv: str | None) -> list[str]:
    if uv is None:
        return []
    try:
        out = subprocess.run(
            [uv, "python", "list", "--only-installed", "--output-format", "json"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        entries = json.loads(out.stdout) if out.returncode == 0 else []
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    return [e["path"] for e in entries if isinstance(e, dict) and e.get("path")]


def discover_pythons(uv: str | None = None) -> dict[str, str]:
    """Map ``"X.Y"`` -> interpreter path for every working CPython 3 found: the one
    running zexec first (:func:`running_python`), then ``python3.X`` on PATH, then ``uv
    python list``. The first interpreter found for a version wins. This runs every
    candidate (seconds of CPU where pyenv shims are on PATH)."""
    here, exe = running_python()
    found: dict[str, str] = {here: exe}
    tried: set[str] = {os.path.realpath(sys.executable)}

    def probe_new(cands: list[str]) -> None:
        fresh = []
        for cand in cands:
            real = os.path.realpath(cand)
            if real not in tried:
                tried.add(real)
                fresh.append(cand)
        # In parallel: shims (pyenv) are shell scripts and take a while each.
        for cand, got in zip(fresh, pool.map(probe, fresh), strict=True):
            if got is not None and got[0].startswith("3.") and got[0] not in found:
                found[got[0]] = got[1] or cand

    with ThreadPoolExecutor(max_workers=8) as pool:
        from_uv = pool.submit(_uv_candidates, uv)  # slow-ish: it probes too
        probe_new(_path_candidates())
        probe_new(from_uv.result())
    return dict(sorted(found.items(), key=lambda kv: tuple(map(int, kv[0].split(".")))))
