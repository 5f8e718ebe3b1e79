"""Where and as whom one user's server runs: its uid, its private directories, and the
command line that confines it (see :mod:`.isolation` for the modes).

Per user (``<key>`` is the user id made file-name safe):

* ``<users_dir>/<key>/``: the working directory and ``HOME`` of the server and its
  workers, mode 0700, owned by the user's uid: the user's files, out of other users'
  reach (and outside the orchestrator's directory);
* ``<state>/run/<key>/``: the server's ready file, same owner and mode.

The orchestrator itself (the stack's uid) only creates these two directories, sets their
owner and mode, and looks at the ready file: it never writes into what a user controls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zexec.adapters.orchestrator_local.isolation import (
    Isolation,
    drop_privileges,
    sandbox_argv,
    unreachable,
)
from zexec.adapters.orchestrator_local.records import write_json_atomic
from zexec.adapters.orchestrator_local.uids import UidMap
from zexec.core.errors import ConfigurationError, Forbidden, OrchestratorError


@dataclass(frozen=True)
class Tenant:
    """One user's uid (None: the stack's own), working and run directories."""

    uid: int | None
    gid: int | None
    workdir: Path
    rundir: Path

    @property
    def ready_file(self) -> Path:
        return self.rundir / "ready"


def prefix_of(interpreter: str | Path) -> Path:
    """The installation an interpreter belongs to (``/usr/local`` for
    ``/usr/local/bin/python3.11``), its symlinks followed."""
    return Path(os.path.realpath(interpreter)).parents[1]


def pth_dirs(env: Path) -> list[Path]:
    """Absolute directories the env's ``.pth`` files put on ``sys.path`` (an editable
    install's source tree): a sandbox must show them too."""
    found: list[Path] = []
    for pth in env.glob("lib/python*/site-packages/*.pth"):
        try:
            lines = pth.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if line.startswith("/") and Path(line).is_dir():
                found.append(Path(line))
    return found


def paths_to_reach(*dirs: str | Path, interpreter: bool = True) -> list[Path]:
    """What servers running as other uids, without a sandbox, must reach: ``dirs`` (the
    state directory ...) and (``interpreter``) the running interpreter, which serves the
    most common pin (see :func:`.isolation.unreachable`). zexec itself is inside each
    environment (a wheel of the running zexec, see :mod:`.wheel`)."""
    from zexec.adapters.orchestrator_local.pythons import running_python

    return [*map(Path, dirs), *([Path(running_python()[1])] if interpreter else [])]


class Tenancy:
    """Tenants of one orchestrator, under ``isolation``."""

    def __init__(
        self, isolation: Isolation, state_dir: Path, users_dir: Path,
        uids: UidMap | None = None,
    ) -> None:
        self.isolation = isolation
        self.state_dir = state_dir
        self.users_dir = users_dir
        if isolation.uid and uids is None:
            uids = UidMap(state_dir / "uids.json")
        self.uids = uids
        shared = 0o711 if isolation.uid else 0o700  # other uids may pass, not list
        for d, mode in ((state_dir, shared), (users_dir, shared), (state_dir / "run", shared)):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, mode)
        if isolation.uid and not isolation.sandbox:
            # No sandbox to show them their files: the servers walk the real paths.
            # (each server's interpreter is checked when it starts)
            closed = unreachable(paths_to_reach(state_dir / "envs", state_dir / "run",
                                                users_dir, interpreter=False))
            if closed:
                raise ConfigurationError(
                    "uid isolation without a sandbox needs the environments and the users' "
                    f"directories reachable by other uids, but {closed[0]} "
                    "is closed to them (no o+x): allow passing through it (chmod o+x), choose "
                    "another state directory, or install bubblewrap"
                )

    def tenant(self, user_id: str, key: str) -> Tenant:
        """The user's identity and directories, created (0700, owned by the user's uid)."""
        uid, gid = self.uids.uid_for(user_id) if self.uids is not None else (None, None)
        t = Tenant(uid, gid, self.users_dir / key, self.state_dir / "run" / key)
        for d in (t.workdir, t.rundir):
            d.mkdir(mode=0o700, exist_ok=True)
            if uid is not None:
                os.chown(d, uid, gid, follow_symlinks=False)
            os.chmod(d, 0o700, follow_symlinks=False)
        return t

    def argv(self, tenant: Tenant, cmd: Sequence[str], env: Path, interpreter: str) -> list[str]:
        """``cmd`` (the server) confined as the isolation mode says; ``interpreter`` (the
        one ``env`` was made from: trusted, not the user's) also switches the uid."""
        iso = self.isolation
        drop = drop_privileges(interpreter, tenant.uid, tenant.gid) \
            if tenant.uid is not None else []
        if not iso.sandbox:
            closed = unreachable([interpreter, *pth_dirs(env)]) if iso.uid else []
            if closed:
                raise OrchestratorError(
                    f"the server cannot run as uid {tenant.uid}: {closed[0]} is closed to "
                    f"other uids (no o+x), and it must reach {interpreter} and its environment "
                    "through it; allow passing (chmod o+x) or install bubblewrap"
                )
            return [*drop, *cmd]
        assert iso.bwrap is not None
        shown = [env, prefix_of(interpreter), *pth_dirs(env)]
        sandbox = sandbox_argv(
            iso.bwrap, read_only=shown, writable=[tenant.workdir, tenant.rundir],
            workdir=tenant.workdir, privileged=iso.uid, hidden=[self.state_dir, self.users_dir],
        )  # fmt: skip
        return [*sandbox, *drop, *cmd]

    def describe(self, tenant: Tenant) -> str:
        """How a server of ``tenant`` runs, for its log: " (as uid N, in a sandbox)"."""
        how = ([f"as uid {tenant.uid}"] if tenant.uid is not None else []) + (
            ["in a bubblewrap sandbox"] if self.isolation.sandbox else [])
        return f"  ({', '.join(how)})" if how else ""

    def admit(self, user_id: str, username: str) -> None:
        """Without isolation (and no single trust domain) the first user to ask owns the
        stack for good (``<state>/tenant.json``); Forbidden for anyone else."""
        if not self.isolation.one_user_only:
            return
        path = self.state_dir / "tenant.json"
        try:
            owner = json.loads(path.read_text())
        except FileNotFoundError:
            owner = {"user_id": user_id, "username": username}
            write_json_atomic(path, owner)
        if owner.get("user_id") != user_id:
            who = owner.get("username") or owner.get("user_id")
            raise Forbidden(
                f"this zexec stack cannot isolate users from each other ({self.isolation.why}), "
                f"so it serves one user only, and that is {who}. The operator can let users "
                "who all trust each other share it (zexec up --single-trust-domain, or "
                "ZEXEC_DEPLOY_SINGLE_TRUST_DOMAIN=true), or run it as root or with bubblewrap "
                f"so that each user is isolated (to hand it to another user: remove {path})"
            )
