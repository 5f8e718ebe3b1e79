"""The lifecycle rules of a user's server, shared by every orchestrator and the Deploy API:
which phases are terminal, what ``ensure`` does, the conflict users are told about, and
how a server is replaced: beside the old one, never before.

A user's server is *current*; a forced ``ensure`` with a ready current server builds the
new environment as a *next* server beside it, and the current one keeps serving until
the next one is ready (then it is stopped: the broker already routes to the newcomer,
which registered). A next server that fails is reported, and the current one goes on.
These pure functions decide; the orchestrators (local processes, Kubernetes pods, the
in-memory fake) carry it out, so all of them behave alike (the contract test checks).

What users see (``status``): the next server while there is one (its phase is the
progress of the replacement, so a waiting client needs no new logic), with the current
one as :attr:`ServerStatus.previous`; the current one otherwise.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from zexec.core.errors import EnvironmentConflict
from zexec.core.model import EnvSpec, ServerStatus
from zexec.core.resources import describe_resources

#: Phases after which nothing runs any more.
TERMINAL = frozenset({"failed", "terminated"})
#: Phases of a server still on its way to ready.
IN_PROGRESS = frozenset({"pending", "installing", "starting"})

Decision = Literal["keep-current", "keep-next", "conflict", "replace-beside", "restart"]


def live(st: ServerStatus | None) -> bool:
    return st is not None and st.phase not in TERMINAL


def wanted(current: ServerStatus | None, nxt: ServerStatus | None) -> ServerStatus | None:
    """The server whose environment the user asked for last: a next one on its way,
    else a live current one."""
    if nxt is not None and nxt.phase not in TERMINAL:
        return nxt
    return current if live(current) else None


def plan_ensure(current: ServerStatus | None, nxt: ServerStatus | None, spec: EnvSpec,
                force: bool) -> Decision:
    """What ``ensure(spec, force)`` does.

    * ``keep-current`` / ``keep-next``: that server already has (or builds) ``spec``
      (a failed next one is dropped by ``keep-current``);
    * ``conflict``: another environment, no ``force``;
    * ``replace-beside``: build a next server; the ready current one serves meanwhile
      (a next one already building is stopped first);
    * ``restart``: nothing serves yet (or any more): stop whatever there is, start anew.
    """
    target = wanted(current, nxt)
    if target is not None and not force:
        if target.env is not None and target.env.same_server(spec):
            return "keep-next" if target is nxt else "keep-current"
        return "conflict"
    if current is not None and current.phase == "ready":
        return "replace-beside"
    return "restart"


def conflict_message(user_id: str, current: EnvSpec | None, wanted: EnvSpec) -> str:
    """The 409 text every orchestrator uses, so users see the same advice everywhere."""
    have = current.digest[:12] if current else "unknown"
    what = f"digest {have}, requested {wanted.digest[:12]}"
    if current is not None and current.digest == wanted.digest:
        what = (f"resources {describe_resources(current.resources)}, requested "
                f"{describe_resources(wanted.resources)}")
    return (
        f"user {user_id!r} already has a server with another environment "
        f"({what}); terminate it first or spawn again with force=true to replace it"
    )


def conflict(user_id: str, current: ServerStatus | None, nxt: ServerStatus | None,
             spec: EnvSpec) -> EnvironmentConflict:
    """The error of an ``ensure`` that :func:`plan_ensure` calls a ``conflict``."""
    have = wanted(current, nxt)
    return EnvironmentConflict(conflict_message(user_id, have.env if have else None, spec))


def spawn_outcome(before: ServerStatus | None, force: bool) -> str:
    """What a spawn did, given the server before it: ``created`` (none was live),
    ``replaced`` (forced) or ``unchanged`` (the same environment already ran)."""
    if not live(before):
        return "created"
    return "replaced" if force else "unchanged"


def plan_cancel(current: ServerStatus | None, nxt: ServerStatus | None,
                digest: str | None) -> Literal["next", "current"] | None:
    """What ``cancel(digest)`` stops: a next server on its way (the current one goes on),
    or a first server that is not ready yet; None when no build of ``digest`` (any, if
    None) is under way."""

    def matches(st: ServerStatus) -> bool:
        return digest is None or (st.env is not None and st.env.digest == digest)

    if nxt is not None and nxt.phase in IN_PROGRESS and matches(nxt):
        return "next"
    if nxt is None and current is not None and current.phase in IN_PROGRESS \
            and matches(current):
        return "current"
    return None


def describe_env(env: EnvSpec | None) -> str:
    if env is None:
        return "its environment"
    return f"python {env.python} + {len(env.requirements)} requirement(s)"


def view(current: ServerStatus | None, nxt: ServerStatus | None) -> ServerStatus | None:
    """What ``status`` reports (see the module doc). A failed next server's reason says
    that the current one keeps serving."""
    if nxt is None:
        return current
    previous = current if live(current) else None
    reason = nxt.reason
    if previous is not None and nxt.phase == "failed":
        reason = (f"{reason.rstrip('. ')}; your previous server "
                  f"({describe_env(previous.env)}) keeps serving").lstrip("; ")
    return replace(nxt, reason=reason, previous=previous)
