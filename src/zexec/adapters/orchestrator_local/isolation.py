"""How the local orchestrator keeps users apart on one machine: the isolation mode, and
the command line that starts a server under it.

Modes (``ZEXEC_DEPLOY_ISOLATION``; ``auto`` picks the strongest the machine allows):

* ``uid+sandbox`` (root with a working bubblewrap): each user's server runs as the
  user's own unprivileged uid inside a bubblewrap sandbox (own pid, ipc, uts and mount
  namespaces) that shows only ``/usr``, ``/etc``, the interpreter, the environment
  (read-only), the user's private working directory and run directory;
* ``uid`` (root without bubblewrap): the user's own uid, no namespaces: other users'
  processes are visible in ``/proc`` but cannot be read, traced or signalled, their
  files (0700 directories) cannot be read;
* ``sandbox`` (not root, bubblewrap usable through user namespaces): one uid for every
  server, each in its own sandbox; weaker (an escape from the sandbox reaches the
  stack's files) but other users' processes and files are out of sight;
* ``none``: servers run as the stack's own uid and see everything it sees. One user
  only, unless the operator declares every user trusted (``single_trust_domain``).

With a uid, the switch happens in a few lines run by the interpreter the environment was
made from, with ``-I -S`` (:data:`DROP_PRIVILEGES`): nothing of the user's environment
runs before the process is the user's, without capabilities, with ``no_new_privs``
(setuid binaries do not elevate) and umask 077 (the user's new files are private).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zexec.core.errors import ConfigurationError

MODES = ("auto", "uid+sandbox", "uid", "sandbox", "none")
#: Host directories every sandbox shows read-only (the ones that exist here).
SYSTEM_DIRS = ("/usr", "/etc", "/sys", "/opt")
#: Top-level names that merged-/usr systems make symlinks into /usr.
USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

#: Runs as root: drop to ``argv[1]:argv[2]`` for good, then exec ``argv[3:]``.
DROP_PRIVILEGES = (
    "import ctypes, os, sys\n"
    "uid, gid = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.setgroups([])\n"
    "os.setresgid(gid, gid, gid)\n"
    "os.setresuid(uid, uid, uid)\n"
    "if os.getresuid() != (uid, uid, uid) or os.getgroups():\n"
    "    sys.exit('zexec: could not switch to uid %d' % uid)\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS\n"
    "    sys.exit('zexec: prctl(PR_SET_NO_NEW_PRIVS) failed')\n"
    "os.umask(0o077)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


@dataclass(frozen=True)
class Isolation:
    """A resolved mode (never ``auto``), the bubblewrap binary when sandboxing, and
    whether users who cannot be isolated may share the stack anyway."""

    mode: str
    bwrap: str | None = None
    single_trust_domain: bool = False
    #: Why the mode is what it is (shown by ``zexec up`` and ``zexec status``).
    why: str = ""

    @property
    def uid(self) -> bool:
        return self.mode.startswith("uid")

    @property
    def sandbox(self) -> bool:
        return self.mode.endswith("sandbox")

    @property
    def one_user_only(self) -> bool:
        """Whether a second distinct user must be refused."""
        return self.mode == "none" and not self.single_trust_domain

    def describe(self) -> str:
        """One line for people: what separates one user's code from another's."""
        return {
            "uid+sandbox": "each user's server runs as its own uid in a bubblewrap sandbox",
            "uid": "each user's server runs as its own uid, without a sandbox",
            "sandbox": "each user's server runs in its own bubblewrap sandbox (same uid)",
            "none": "NONE: every user's code runs as this stack's uid and can read the "
            "stack's secrets and other users' files"
            + (" (single trust domain: several users allowed)" if self.single_trust_domain
               else "; a second user is refused (--single-trust-domain allows them)"),
        }[self.mode] + (f" [{self.why}]" if self.why else "")

    def as_dict(self) -> dict[str, object]:
        return {"mode": self.mode, "single_trust_domain": self.single_trust_domain,
                "description": self.describe()}

    @classmethod
    def off(cls, single_trust_domain: bool = True) -> Isolation:
        """No isolation (tests, and a stack whose users all trust each other)."""
        return cls("none", None, single_trust_domain, "isolation turned off")


@functools.cache
def bwrap_problem(bwrap: str) -> str | None:
    """None when ``bwrap`` can start a sandbox here (as this uid), else why not. Cached:
    one trial run (some milliseconds) per process."""
    try:
        out = subprocess.run(
            [bwrap, "--unshare-pid", "--unshare-ipc", "--ro-bind", "/", "/", "--proc", "/proc",
             "--dev", "/dev", "true"],
            capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{bwrap} does not run: {exc}"
    if out.returncode != 0:
        return f"{bwrap} cannot create namespaces here: {out.stderr.strip()[:200]}"
    return None


def resolve(
    requested: str, *, single_trust_domain: bool = False, euid: int | None = None,
    bwrap: str | None = None, reach: Sequence[str | Path] = (),
) -> Isolation:
    """The mode ``requested`` means on this machine; ConfigurationError when it asks
    for what the machine cannot do (a uid without root, a sandbox without bubblewrap).
    ``euid`` / ``bwrap`` default to this process's and the ``bwrap`` on PATH. ``reach``:
    paths whose parents servers running as other uids must pass without a sandbox (the
    state directory, the interpreter, zexec's source): ``auto`` cannot isolate by uid
    alone when one is closed to them."""
    if requested not in MODES:
        raise ConfigurationError(f"isolation must be one of {', '.join(MODES)}, not {requested!r}")
    root = (os.geteuid() if euid is None else euid) == 0
    bwrap = bwrap or shutil.which("bwrap")
    problem = "bubblewrap (bwrap) is not installed" if bwrap is None else bwrap_problem(bwrap)
    if requested == "auto":
        closed = unreachable(reach) if root and problem else []
        if root and closed:
            problem += f", and {closed[0]} is closed to other uids (no o+x)"
        if root and not closed:
            requested = "uid" if problem else "uid+sandbox"
        else:
            requested = "none" if problem else "sandbox"
        why = f"auto: {'root' if root else 'not root'}" + (f"; {problem}" if problem else "")
    else:
        why = "as configured"
    if requested.startswith("uid") and not root:
        raise ConfigurationError(
            f"isolation {requested!r} needs root (to run servers as other uids); "
            "this process runs as uid %d" % os.geteuid()
        )
    if requested.endswith("sandbox") and problem:
        raise ConfigurationError(f"isolation {requested!r} needs a usable bubblewrap: {problem}")
    sandboxing = requested.endswith("sandbox")
    return Isolation(requested, bwrap if sandboxing else None, single_trust_domain, why)


def drop_privileges(python: str, uid: int, gid: int) -> list[str]:
    """The argv prefix that runs the rest of the command as ``uid:gid``."""
    return [python, "-I", "-S", "-c", DROP_PRIVILEGES, str(uid), str(gid)]


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def sandbox_argv(
    bwrap: str, *, read_only: Sequence[str | Path], writable: Sequence[str | Path],
    workdir: str | Path, privileged: bool, hidden: Sequence[str | Path] = (),
) -> list[str]:
    """bubblewrap's arguments (up to the command) for a sandbox that shows the system
    directories and ``read_only`` read-only, ``writable`` read-write, each at its own
    path, a private ``/tmp``, ``/proc`` and ``/dev``, and nothing else. A read-only
    path that would show one of ``hidden`` (the state directory) is refused.
    ``privileged``: bubblewrap runs as root (no user namespace: the uid switch happens
    inside); else it runs as the stack's own uid in a user namespace that cannot create
    further ones."""
    argv = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not privileged:
        argv += ["--unshare-user", "--disable-userns"]
    host: list[str] = []  # host directories shown: everything below them exists too
    for name in USR_LINKS:
        top = Path("/") / name
        if top.is_symlink():
            argv += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            argv += ["--ro-bind", str(top), str(top)]
            host.append(str(top))
    secret = [os.path.realpath(h) for h in hidden]
    for d in SYSTEM_DIRS:
        # (a state directory under /opt hides /opt rather than show itself)
        if Path(d).is_dir() and not any(_under(h, [d]) for h in secret):
            argv += ["--ro-bind", d, d]
            host.append(d)
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    made = {"/", "/proc", "/dev", "/tmp"}  # exist in the sandbox, empty
    for kind, paths in (("--ro-bind", read_only), ("--bind", writable)):
        for p in sorted({os.path.realpath(p) for p in paths}, key=lambda s: (s.count("/"), s)):
            if kind == "--ro-bind":
                shown = [h for h in secret if _under(h, [p])]
                if shown:
                    raise ConfigurationError(
                        f"the sandbox would show {p}, which holds the private {shown[0]}; "
                        "keep the state directory out of the interpreter's and the "
                        "environments' directories"
                    )
                if _under(p, host):
                    continue  # visible read-only already
            if not _under(p, host):
                for parent in map(str, list(reversed(Path(p).parents))[1:]):
                    if parent not in made and not _under(parent, host):
                        # bubblewrap would make it 0700, closed to the user's uid
                        argv += ["--perms", "0755", "--dir", parent]
                        made.add(parent)
            argv += [kind, p, p]
            host.append(p)
    return [*argv, "--chdir", str(workdir)]


def unreachable(paths: Sequence[str | Path]) -> list[str]:
    """Directories among the ancestors of ``paths`` that an unprivileged other uid
    cannot enter (no ``o+x``): with uid isolation and no sandbox, the users' servers
    must walk these paths to reach their environment."""
    bad: list[str] = []
    for p in paths:
        for d in reversed(Path(os.path.realpath(p)).parents):
            try:
                mode = d.stat().st_mode
            except OSError:
                continue
            if not mode & 0o001 and str(d) not in bad:
                bad.append(str(d))
    return bad
