"""The broker's :class:`Router`: the frontend side (clients, token checks, routing a
call) and the clock (deadlines, draining). The backend side is
:mod:`zexec.core.broker.backend`, the state it keeps :mod:`zexec.core.broker.state`; the
package's docstring says how it all works."""

from __future__ import annotations

import heapq
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from zexec.core import protocol as p
from zexec.core.broker.backend import BackendSide
from zexec.core.broker.state import (  # noqa: F401  (names the broker's callers use)
    BACK,
    BYE_GRACE,
    FRONT,
    LEGACY_AUTH_DOWN,
    LEGACY_BAD_TOKEN,
    LEGACY_BUSY,
    LEGACY_DRAINING,
    LEGACY_NO_SERVER,
    LEGACY_ONE_CALL,
    LEGACY_SERVER_STOPPING,
    InFlight,
    Key,
    Parked,
    ServerEntry,
    WorkerEntry,
    size_of,
    started_at,
)
from zexec.core.errors import (
    AuthError,
    AuthUnavailable,
    Busy,
    Forbidden,
    ProtocolError,
    TooLarge,
    ZexecError,
)
from zexec.core.model import UserIdentity
from zexec.core.tokencache import TokenCache, token_key

log = logging.getLogger("zexec.broker")


class Router(BackendSide):
    """Routes client calls to the registered server of the token's user."""

    def __init__(
        self,
        server_secret: bytes,
        cache: TokenCache | None = None,
        server_ttl: float = 2.0,
        max_parked: int = 10_000,
        max_checks_per_peer: int = 4,
        max_queued_bytes: int = 1 << 30,
    ) -> None:
        if not server_secret:
            raise ValueError("the broker needs a server secret to authenticate servers")
        self.secret = server_secret
        self.cache = cache or TokenCache()
        self.server_ttl = server_ttl
        self.max_parked = max_parked
        self.servers: dict[str, ServerEntry] = {}
        self.server_users: dict[bytes, str] = {}
        self.inflight: dict[Key, InFlight] = {}
        self.workers: dict[bytes, WorkerEntry] = {}
        #: Calls a server's workers may hold queued here, in bytes of arguments, per
        #: server: the broker is shared, one user's backlog must not exhaust it.
        self.max_queued_bytes = max_queued_bytes
        self._deadlines: list[tuple[float, Key]] = []  # a heap
        self._credentials: dict[str, bytes] = {}  # user id -> expected server credential
        #: Calls of a server that said BYE: (when they fail, why) unless they end first.
        self.orphans: dict[Key, tuple[float, str]] = {}
        self.parked: dict[bytes, list[Parked]] = defaultdict(list)
        self.parked_count = 0
        self.tokens: dict[bytes, bytes] = {}  # key -> peer that asked, while checked
        self.checks_by_peer: dict[bytes, int] = defaultdict(int)
        self.max_checks_per_peer = max_checks_per_peer
        self.draining = False
        self.last_activity: dict[str, float] = {}
        self.outbox: list[tuple[str, list[Any]]] = []
        self.auth_requests: list[tuple[bytes, str]] = []
        self.now = 0.0
        self.stats: dict[str, int] = defaultdict(int)

    # ------------------------------------------------------------------ frontend

    def on_frontend(self, frames: Sequence[Any], now: float, key: bytes | None = None) -> None:
        """A message from a client: ``[rid, b"", *body]``; ``key``: its token's
        :func:`token_key`, when the caller has computed it already."""
        self.now = now
        if len(frames) < 2:
            return  # nothing to answer to: a routing id alone
        rid = p.frame_bytes(frames[0])
        if p.frame_bytes(frames[1]) != b"":
            self._reply_malformed(rid, frames[1:], "missing empty delimiter frame")
            return
        body = frames[2:]
        try:
            msg = p.parse_frontend(body)
        except ProtocolError as exc:
            self._reply_malformed(rid, body, str(exc))
            return
        self._with_identity(rid, msg, key)

    def _reply_malformed(self, rid: bytes, body: Sequence[Any], why: str) -> None:
        self.stats["malformed"] += 1
        self._reply_error(rid, body, "BAD_REQUEST", f"malformed request: {why}")

    def _reply_error(self, rid: bytes, body: Sequence[Any], code: str, text: str) -> None:
        """An error in the protocol ``body``'s first frame suggests (v1 or legacy)."""
        call_id = p.v1_call_id(body)
        if call_id is not None:
            self._front(rid, p.v1_error(call_id[:64], code, text))
        else:
            self._front(rid, [p.legacy_payload(text[:1].upper() + text[1:])])

    def on_frontend_refused(self, frames: Sequence[Any], why: ZexecError, now: float) -> None:
        """A client message the transport did not read whole, because its token was
        refused (``why``: the :class:`AuthError`, or :class:`Busy`) or because it broke a
        limit or was malformed before its token (a :class:`ProtocolError`, e.g.
        :class:`TooLarge`). Frames it skipped are empty placeholders. It is answered as
        far as its first frames tell, and never routed."""
        self.now = now
        if len(frames) < 2:
            return
        rid = p.frame_bytes(frames[0])
        if p.frame_bytes(frames[1]) != b"":
            self._reply_malformed(rid, frames[1:], "missing empty delimiter frame")
            return
        body = frames[2:]
        if isinstance(why, TooLarge):
            self.stats["too_large"] += 1
            self._reply_error(rid, body, why.code, str(why))
            return
        if isinstance(why, ProtocolError):
            self._reply_malformed(rid, body, str(why))
            return
        try:
            msg = p.parse_frontend(body)
        except ProtocolError as exc:
            self._reply_malformed(rid, body, str(exc))
            return
        self._dispatch(rid, msg, why)

    def _with_identity(self, rid: bytes, msg: p.FrontendMessage, key: bytes | None) -> None:
        key = key or token_key(msg.token)
        outcome = self.cache.get(key, self.now)
        if outcome is None:
            self._park(key, rid, msg)
        else:
            self._dispatch(rid, msg, outcome)

    def _park(self, key: bytes, rid: bytes, msg: p.FrontendMessage) -> None:
        if isinstance(msg, p.V1Call) and (rid, msg.call_id) in self.inflight:
            self._refuse_duplicate(rid, msg)
            return
        if self.parked_count >= self.max_parked:
            self._refuse(rid, msg, "BUSY", "broker is busy checking tokens; retry", LEGACY_BUSY)
            return
        if key not in self.tokens:
            # One connection may not occupy the checker with many unknown tokens: a
            # flood of bad tokens from one peer must not starve other users' checks.
            if self.checks_by_peer[rid] >= self.max_checks_per_peer:
                self._refuse(rid, msg, "BUSY", "too many token checks in flight from this "
                             "connection; retry", LEGACY_BUSY)
                return
            self.checks_by_peer[rid] += 1
            self.tokens[key] = rid
            self.auth_requests.append((key, msg.token))
        self.parked[key].append(Parked(rid, msg))
        self.parked_count += 1
        if isinstance(msg, p.V1Call):
            # Known to PINGs while its token is checked, so it is not reported lost.
            self.inflight[(rid, msg.call_id)] = InFlight("", False, None, self.now)

    def on_auth_result(self, key: bytes, outcome: UserIdentity | AuthError, now: float) -> None:
        """The outcome of the check requested for token ``key``; replays parked messages."""
        self.now = now
        self.cache.put(key, outcome, now)
        peer = self.tokens.pop(key, None)
        if peer is not None:
            self.checks_by_peer[peer] -= 1
            if self.checks_by_peer[peer] <= 0:
                del self.checks_by_peer[peer]
        for parked in self.parked.pop(key, []):
            self.parked_count -= 1
            if isinstance(parked.msg, p.V1Call):
                self.inflight.pop((parked.rid, parked.msg.call_id), None)  # the placeholder
            self._dispatch(parked.rid, parked.msg, outcome)

    def _dispatch(
        self, rid: bytes, msg: p.FrontendMessage, outcome: UserIdentity | AuthError | Busy
    ) -> None:
        if not isinstance(outcome, UserIdentity):
            code = outcome.code
            if isinstance(outcome, Busy):
                self.stats["busy"] += 1
                self._refuse(rid, msg, code, str(outcome), LEGACY_BUSY)
                return
            self.stats["auth_failed"] += 1
            if isinstance(outcome, AuthUnavailable):
                text, legacy = "identity provider unavailable; retry shortly", LEGACY_AUTH_DOWN
            elif isinstance(outcome, Forbidden):
                text, legacy = f"forbidden: {outcome}", f"{LEGACY_BAD_TOKEN} {outcome}"
            else:
                text, legacy = "token validation failed", LEGACY_BAD_TOKEN
            self._refuse(rid, msg, code, text, legacy)
            return
        user = outcome.user_id
        if isinstance(msg, p.V1Call):
            self._route_call(rid, msg.call_id, user, p.CALL, msg.rest, legacy=False, msg=msg)
        elif isinstance(msg, p.LegacyCall):
            self._route_call(rid, b"", user, p.LEGACY_CALL, [msg.fn, msg.args], legacy=True, msg=msg)
        elif isinstance(msg, p.V1Cancel):
            self._route_cancel(rid, msg.call_id, user, p.CANCEL, msg.reason)
        elif isinstance(msg, p.LegacyCancel):
            self._route_cancel(rid, b"", user, p.LEGACY_CANCEL_VERB, msg.reason)
        elif isinstance(msg, p.V1Ping):
            unknown = [c.hex() for c in msg.call_ids if (rid, c) not in self.inflight]
            server = self.servers.get(user)
            self._front(rid, p.v1_pong({
                "server": server is not None, "unknown": unknown, "draining": self.draining,
            }))

    def _refuse(
        self, rid: bytes, msg: p.FrontendMessage, code: str, text: str, legacy_text: str
    ) -> None:
        if isinstance(msg, p.V1Call | p.V1Cancel):
            self._front(rid, p.v1_error(msg.call_id, code, text))
        elif isinstance(msg, p.V1Ping):
            self._front(rid, p.v1_error(b"", code, text))
        elif isinstance(msg, p.LegacyCall):
            self._front(rid, [p.legacy_payload(legacy_text)])
        # A refused legacy cancel gets no answer: its client has closed the socket.

    def _route_call(
        self, rid: bytes, call_key: bytes, user: str, verb: bytes, rest: list[Any],
        legacy: bool, msg: p.FrontendMessage,
    ) -> None:
        if self.draining:
            self._refuse(rid, msg, "SHUTTING_DOWN", "broker is shutting down", LEGACY_DRAINING)
            return
        if (rid, call_key) in self.inflight:
            self._refuse_duplicate(rid, msg)
            return
        server = self.servers.get(user)
        if server is None:
            self.stats["no_server"] += 1
            self._refuse(
                rid, msg, "NO_SERVER",
                f"no server is running for user {user}; start one (zexec.environment(...))",
                LEGACY_NO_SERVER.format(user=user),
            )
            return
        if server.direct:
            self._route_direct(rid, call_key, server, verb, rest, legacy, msg)
            return
        self.inflight[(rid, call_key)] = InFlight(user, legacy, server.rid, self.now)
        self.last_activity[user] = self.now
        self.stats["calls"] += 1
        self.outbox.append((BACK, [server.rid, *p.to_server(verb, rid, call_key, user, rest)]))

    def _refuse_duplicate(self, rid: bytes, msg: p.FrontendMessage) -> None:
        # Events are routed by call id: a second call with the id of one still in flight
        # on this connection could never be told apart from it.
        self._refuse(rid, msg, "BAD_REQUEST", "a call with this id is already running on "
                     "this connection", LEGACY_ONE_CALL)

    def _route_direct(
        self, rid: bytes, call_key: bytes, server: ServerEntry, verb: bytes, rest: list[Any],
        legacy: bool, msg: p.FrontendMessage,
    ) -> None:
        """Hand the call to an idle worker of ``server``, or queue it for the next one."""
        user = server.user_id
        if server.stopping:
            self._refuse(rid, msg, "SHUTTING_DOWN", f"the server of user {user} is shutting "
                         "down; retry shortly", LEGACY_SERVER_STOPPING.format(user=user))
            return
        timeout = None
        if not legacy:  # the broker ends the call at its timeout (the header said it)
            try:
                timeout = p.call_timeout(p.load_header(rest[0]))
            except ProtocolError as exc:
                self._refuse(rid, msg, "BAD_REQUEST", f"bad call header: {exc}", "")
                return
        size = 0 if server.idle else size_of(rest)
        # At least one call may always wait, however large (it is here already).
        if size and server.queued and server.queued_bytes + size > self.max_queued_bytes:
            self.stats["queue_full"] += 1
            self._refuse(rid, msg, "BUSY", f"too many calls are waiting for the workers of "
                         f"user {user}; retry", LEGACY_BUSY)
            return
        key = (rid, call_key)
        call = InFlight(user, legacy, server.rid, self.now, direct=True, timeout=timeout)
        if timeout is not None:
            heapq.heappush(self._deadlines, (self.now + timeout, key))
        self.inflight[key] = call
        self.last_activity[user] = self.now
        self.stats["calls"] += 1
        frames = p.to_server(verb, rid, call_key, user, rest)
        if server.idle:
            self._run(self.workers[server.idle.pop()], key, call, frames)
        else:
            self._queue(server, key, frames, size)

    @staticmethod
    def _queue(server: ServerEntry, key: Key, frames: list[Any], size: int,
               first: bool = False) -> None:
        """Let a call (its ``frames`` to a worker, ``size`` bytes) wait for ``server``'s
        next free worker: last in line, or ``first``."""
        server.queued[key] = (frames, size)
        if first:
            server.queued.move_to_end(key, last=False)
        server.queued_bytes += size

    def _run(self, worker: WorkerEntry, key: Key, call: InFlight, frames: list[Any]) -> None:
        worker.call = key
        call.worker_rid = worker.rid
        self.outbox.append((BACK, [worker.rid, *frames]))

    def _route_cancel(
        self, rid: bytes, call_key: bytes, user: str, verb: bytes, reason: bytes
    ) -> None:
        key = (rid, call_key)
        call = self.inflight.get(key)
        if call is None or call.user_id != user or call.server_rid is None:
            return  # finished already, or not this user's: nothing to cancel
        if not call.direct:
            self.outbox.append(
                (BACK, [call.server_rid, *p.to_server(verb, rid, call_key, user, [reason])])
            )
            return
        self._stop_call(key, call, p.final_cancelled(call_key, call.legacy,
                                                     reason.decode(errors="replace")))

    def _stop_call(self, key: Key, call: InFlight, body: list[Any], kill: bool = True) -> None:
        """End a directly dispatched call with ``body`` (an event of the broker's own,
        seq 0): unqueue it, or retire its worker and (``kill``) have it killed (a worker
        stopped mid-call cannot be trusted with another)."""
        server = self.servers.get(call.user_id)
        if call.worker_rid is not None:
            self._retire(call.worker_rid, kill=kill)
        elif server is not None:
            queued = server.queued.pop(key, None)
            if queued is not None:
                server.queued_bytes -= queued[1]
        self._deliver(key, True, body)

    # ------------------------------------------------------------------ outputs

    def take_outbox(self) -> list[tuple[str, list[Any]]]:
        """What to send, in order: ``(FRONT or BACK, [routing id, *frames])``. The caller
        sends all of it; what the router adds meanwhile is in the next take."""
        out, self.outbox = self.outbox, []
        return out

    def take_auth_requests(self) -> list[tuple[bytes, str]]:
        """Token checks to run: ``(token key, token)``; each outcome comes back through
        :meth:`on_auth_result`."""
        asked, self.auth_requests = self.auth_requests, []
        return asked

    # ------------------------------------------------------------------ time

    @property
    def next_deadline(self) -> float:
        """When the earliest timeout of a directly dispatched call expires (inf: none);
        :meth:`tick` should run then."""
        return self._deadlines[0][0] if self._deadlines else float("inf")

    def tick(self, now: float) -> None:
        """Expire servers that stopped heartbeating, failing their calls, calls of a
        server that said BYE whose last events did not come within the grace, and
        directly dispatched calls past their timeout."""
        self.now = now
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, key = heapq.heappop(self._deadlines)
            call = self.inflight.get(key)
            if call is None or call.timeout is None or call.started + call.timeout != deadline:
                continue  # ended already (the key may even be another call's by now)
            self._stop_call(key, call, p.final_error(
                key[1], call.legacy, "DEADLINE_EXCEEDED",
                f"the call exceeded its timeout of {call.timeout:g}s and was stopped",
                type_name="TimeoutError"))
        for key, (deadline, why) in list(self.orphans.items()):
            if now >= deadline:
                del self.orphans[key]
                call = self.inflight.get(key)
                if call is not None:
                    self._server_gone(key, call, why)
        for user, entry in list(self.servers.items()):
            if now - entry.last_seen > self.server_ttl:
                self._drop_server(user, f"no heartbeat for {now - entry.last_seen:.1f}s")

    def start_draining(self) -> None:
        self.draining = True

    def peers_with_calls(self) -> set[bytes]:
        """Routing ids of clients with a call in flight (parked ones included) and of
        workers running one: connections that must not be closed as idle."""
        peers = {key[0] for key in self.inflight}
        peers.update(rid for rid, w in self.workers.items() if w.call is not None)
        return peers

    @property
    def busy(self) -> bool:
        """Calls are in flight (routed to a server or waiting for a token check)."""
        return bool(self.inflight) or self.parked_count > 0

    def server_info(self, user: str) -> dict[str, Any] | None:
        """What ``user``'s registered server last said of itself (its heartbeat's info:
        name, pid, Python, workers, stopping...), or None when none is registered."""
        entry = self.servers.get(user)
        return dict(entry.info) if entry is not None else None

    def status(self) -> dict[str, Any]:
        """What the control port's STATUS returns (no tokens, no payloads)."""
        return {
            "draining": self.draining,
            "inflight": len(self.inflight),
            "parked": self.parked_count,
            "servers": {
                user: {
                    "last_seen_ago": round(self.now - e.last_seen, 3),
                    "last_call_ago": (round(self.now - self.last_activity[user], 3)
                                      if user in self.last_activity else None),
                    "inflight": sum(1 for c in self.inflight.values() if c.server_rid == e.rid),
                    "info": e.info,
                    **({"workers": len(e.workers), "idle": len(e.idle),
                        "queued": len(e.queued)} if e.direct else {}),
                }
                for user, e in self.servers.items()
            },
            "stats": dict(self.stats),
        }

    def _front(self, rid: bytes, body: list[Any]) -> None:
        self.outbox.append((FRONT, [rid, b"", *body]))
