"""What the ``server`` extra brings, and the one message that says how to install it.

``pip install zexec`` is the client SDK (and the per-user server that runs in each
user's environment); ``pip install 'zexec[server]'`` adds what the stack's own
components need: FastAPI and uvicorn (Deploy API, EP API, development IdP), uv (the
local orchestrator's environments), the Kubernetes client, ... Every entry point that
meets a missing module of that extra says so with :func:`missing_extra` (the CLI's
``guard`` for every command and ``python -m`` entry point, ``zexec up`` before it starts
anything), never with a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys

from zexec.core.errors import ZexecError

#: Import name -> distribution of each module the ``server`` extra provides (the
#: distributions are the extra's in pyproject.toml; a unit test keeps the two in step).
SERVER_MODULES = {
    "fastapi": "fastapi",
    "starlette": "fastapi",
    "uvicorn": "uvicorn",
    "multipart": "python-multipart",
    "prometheus_client": "prometheus-client",
    "kubernetes": "kubernetes",
    "jwt": "pyjwt",
    "cryptography": "cryptography",
    "dependency_injector": "dependency-injector",
    "uv": "uv",
}
INSTALL_SERVER = "pip install 'zexec[server]'"


class MissingExtra(ZexecError, ImportError):
    """A part of zexec needs the ``server`` extra, which is not installed here."""

    code = "MISSING_EXTRA"


def install_hint(missing: list[str], what: str) -> str:
    """The sentence naming what is missing (``missing``: import names) and the exact
    command that installs it."""
    names = ", ".join(sorted({SERVER_MODULES.get(m, m) for m in missing}))
    return (
        f"{what} needs zexec's server extra ({names} not installed); install it with: "
        f"{INSTALL_SERVER}   (into the environment of {sys.executable})"
    )


def missing_extra(exc: BaseException, what: str) -> MissingExtra | None:
    """The :class:`MissingExtra` a ``ModuleNotFoundError`` stands for, or None when the
    missing module is not one the ``server`` extra provides."""
    name = getattr(exc, "name", None) or ""
    if not isinstance(exc, ModuleNotFoundError) or name.split(".")[0] not in SERVER_MODULES:
        return None
    return MissingExtra(install_hint([name.split(".")[0]], what))


def require_server(what: str) -> None:
    """Raise :class:`MissingExtra` unless every module of the ``server`` extra is
    importable and a ``uv`` binary can be found (looked up, not imported: a few stat
    calls)."""
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if "uv" in missing and shutil.which("uv"):
        missing.remove("uv")  # a uv on PATH serves as well as the package's
    if missing:
        raise MissingExtra(install_hint(missing, what))
