"""The server pod's install init container:
``python -m zexec.adapters.orchestrator_k8s.install_env --installer uv --venv DIR -r FILE``.

Makes the venv (seeing the image's packages, zexec among them) and installs the
requirements file into it, with uv or pip, in one container: every init container costs a
container start and a status round trip, so one step instead of two makes pods ready
sooner. No shell: the requirements stay data in the file, never a command line. The last
step replaces this process (exec), so its exit code and output are the installer's own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys


def uv_binary() -> str:
    try:
        from uv import find_uv_bin  # the uv wheel's own locator

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv") or "uv"


def steps(installer: str, venv: str, requirements: str) -> list[list[str]]:
    python = f"{venv}/bin/python"
    if installer == "uv":
        uv = uv_binary()
        return [
            [uv, "venv", "--quiet", "--system-site-packages", "--python", sys.executable, venv],
            [uv, "pip", "install", "--python", python, "-r", requirements],
        ]
    return [
        [sys.executable, "-m", "venv", "--system-site-packages", venv],
        [python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
         "-r", requirements],
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m zexec.adapters.orchestrator_k8s.install_env")
    p.add_argument("--installer", choices=("uv", "pip"), default="uv")
    p.add_argument("--venv", required=True)
    p.add_argument("-r", "--requirement", required=True)
    args = p.parse_args(argv)
    *first, last = steps(args.installer, args.venv, args.requirement)
    for cmd in first:
        done = subprocess.run(cmd, check=False)
        if done.returncode:
            raise SystemExit(done.returncode)
    sys.stdout.flush()
    os.execv(last[0], last)


if __name__ == "__main__":
    main()
