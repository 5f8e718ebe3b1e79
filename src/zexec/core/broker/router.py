"""The broker's routing logic as a pure state machine: frames in, frames out.

No sockets and no threads here. The socket loop (:mod:`zexec.adapters.transport_zmtp.
broker_loop`) feeds it messages and auth outcomes and sends what it puts in ``outbox``;
tests drive it directly. Token checks are asynchronous: a message whose token is not in
the cache is *parked* and an auth request is queued in ``auth_requests``; the loop runs
the check in a thread and hands the outcome back with :meth:`Router.on_auth_result`, so a
slow identity provider never stalls other users' traffic. (The loop checks most tokens
before it even reads the rest of their message; messages it did not read whole come in
through :meth:`Router.on_frontend_refused` and :meth:`Router.on_backend_refused`.)

Routing ids are the ones the socket loop gives: a key it assigned per connection, or on
the backend a worker's name (unique among live connections, never starting with a zero
byte, so it cannot collide with a key).

State is soft: registered servers (refreshed by heartbeats), their workers, and calls in
flight. A restarted broker rebuilds it from the next heartbeats; calls that were in
flight are reported lost to clients that ask (PING).

**Direct dispatch.** A server that registers with ``"direct": true`` has its workers
connect to the backend themselves and announce when idle (``WRDY``, with the server's
credential). The broker then hands a call straight to an idle worker of the user's
server, or queues it here until one is free (a worker is free again once it sent the
call's final event), so a call crosses one process fewer. The broker is then the one
place that decides how a call ends: it answers a cancel and an expired timeout itself
and asks the server to ``KILL`` the worker that was running the call; a worker that died
(``WGONE`` from its server) fails its call. A server without ``direct`` gets the calls
and runs its own queue, as before.
"""

from __future__ import annotations

import heapq
import hmac
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zexec.core import protocol as p
from zexec.core.errors import (
    AuthError,
    AuthUnavailable,
    Busy,
    Forbidden,
    ProtocolError,
    TooLarge,
    ZexecError,
)
from zexec.core.exits import worker_died
from zexec.core.model import UserIdentity
from zexec.core.tokencache import TokenCache, token_key

log = logging.getLogger("zexec.broker")

FRONT = "front"
BACK = "back"
#: Seconds a server's in-flight v1 calls wait, after its BYE, for their workers' last
#: events (sent on the workers' own connections) before failing with SERVER_GONE.
BYE_GRACE = 1.0

# Strings the deployed broker answered legacy clients with (they print them).
LEGACY_BAD_TOKEN = "Token validation failed."
LEGACY_AUTH_DOWN = "Token validation failed: identity provider unavailable."
LEGACY_NO_SERVER = "Server not ready/available for user {user}."
LEGACY_DRAINING = "Broker is shutting down; try again shortly."
LEGACY_BUSY = "Broker is busy; try again shortly."
LEGACY_ONE_CALL = "A call is already running on this connection."
LEGACY_SERVER_STOPPING = "The server of user {user} is shutting down; try again shortly."

Key = tuple[bytes, bytes]  # (client routing id, call key)


@dataclass
class ServerEntry:
    rid: bytes
    user_id: str
    last_seen: float
    info: dict[str, Any] = field(default_factory=dict)
    # Direct dispatch (see the module docstring); unused for other servers.
    workers: set[bytes] = field(default_factory=set)
    idle: list[bytes] = field(default_factory=list)  # a stack: the warmest worker first
    #: Calls waiting for a worker, oldest first: (frames, size in bytes).
    queued: OrderedDict[Key, tuple[list[Any], int]] = field(default_factory=OrderedDict)
    queued_bytes: int = 0

    @property
    def direct(self) -> bool:
        return self.info.get("direct") is True

    @property
    def stopping(self) -> bool:
        return self.info.get("stopping") is True

    @property
    def worker_prefix(self) -> bytes:
        """What its workers' routing ids start with (``info["worker_prefix"]``; empty:
        any)."""
        prefix = self.info.get("worker_prefix")
        return prefix.encode() if isinstance(prefix, str) else b""


@dataclass
class WorkerEntry:
    rid: bytes
    user_id: str
    server_rid: bytes
    call: Key | None = None  # the call it runs


@dataclass
class InFlight:
    user_id: str
    legacy: bool
    server_rid: bytes | None  # None while the token is being checked
    started: float
    direct: bool = False  # dispatched by the broker to a worker (see the module docstring)
    worker_rid: bytes | None = None  # direct dispatch: the worker running it
    timeout: float | None = None  # direct dispatch: it expires at started + timeout


@dataclass
class Parked:
    rid: bytes
    msg: p.FrontendMessage


class Router:
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

    def on_frontend(self, frames: Sequence[Any], now: float) -> None:
        """A message from a client: ``[rid, b"", *body]``."""
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
        self._with_identity(rid, msg)

    def _reply_malformed(self, rid: bytes, body: Sequence[Any], why: str) -> None:
        self.stats["malformed"] += 1
        self._reply_error(rid, body, "BAD_REQUEST", f"malformed request: {why}")

    def _reply_error(self, rid: bytes, body: Sequence[Any], code: str, text: str) -> None:
        """An error in the protocol ``body``'s first frame suggests (v1 or legacy)."""
        if body and p.frame_bytes(body[0]) == p.MAGIC:
            call_id = p.frame_bytes(body[3]) if len(body) > 3 else b""
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

    def _with_identity(self, rid: bytes, msg: p.FrontendMessage) -> None:
        key = token_key(msg.token)
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
        size = 0 if server.idle else _size(rest)
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

    # ------------------------------------------------------------------ backend

    def backend_peer_known(self, rid: bytes) -> bool:
        """``rid`` is a registered server or an announced worker (it showed a valid
        credential)."""
        return rid in self.server_users or rid in self.workers

    def on_backend_bytes(self, rid: bytes, now: float) -> None:
        """Bytes arrived from backend peer ``rid``, maybe only part of a message (a large
        frame in transit): the server it is, or whose worker it is, is alive."""
        user = self.server_users.get(rid)
        if user is None:
            worker = self.workers.get(rid)
            if worker is None:
                return
            user = worker.user_id
            server = self.servers.get(user)
            if server is None or server.rid != worker.server_rid:
                return
        else:
            server = self.servers[user]
        server.last_seen = now

    def on_backend_refused(self, frames: Sequence[Any], why: ZexecError, now: float) -> None:
        """A backend message the transport did not read whole (``why``: a limit it broke,
        or a credential it lacked; skipped frames are empty placeholders). A reply of a
        call in flight ends that call with ``why`` (its client learns the limit); anything
        else is dropped."""
        self.now = now
        if len(frames) < 3 or p.frame_bytes(frames[1]) != b"":
            self.stats["malformed_backend"] += 1
            return
        rid = p.frame_bytes(frames[0])
        try:
            msg = p.parse_backend(frames[2:])
        except ProtocolError:
            self.stats["malformed_backend"] += 1
            return
        if isinstance(msg, p.Register):
            self._register(rid, msg)  # a bad credential: refused as usual
            return
        if not isinstance(msg, p.Reply | p.WorkerReply) or not isinstance(why, ProtocolError):
            self.stats["malformed_backend"] += 1
            return
        key = (msg.client_id, msg.call_key)
        call = self.inflight.get(key)
        error = p.final_error(msg.call_key, call.legacy if call else False, why.code,
                              f"the result could not be relayed: {why}")
        self.stats["too_large"] += 1
        if isinstance(msg, p.Reply):
            user = self.server_users.get(rid)
            if user is not None and call is not None and call.server_rid == rid:
                self._deliver(key, True, error)
            return
        self._worker_reply(rid, p.WorkerReply(msg.user_id, msg.credential, msg.client_id,
                                              msg.call_key, True, error), ended=msg.final)

    def on_backend(self, frames: Sequence[Any], now: float) -> None:
        """A message from a server: ``[rid, b"", *body]``."""
        self.now = now
        if len(frames) < 3 or p.frame_bytes(frames[1]) != b"":
            self.stats["malformed_backend"] += 1
            return
        rid = p.frame_bytes(frames[0])
        try:
            msg = p.parse_backend(frames[2:])
        except ProtocolError as exc:
            self.stats["malformed_backend"] += 1
            log.debug("malformed backend message: %s", exc)
            return
        if isinstance(msg, p.Register):
            self._register(rid, msg)
            return
        if isinstance(msg, p.WorkerReply):
            self._worker_reply(rid, msg)
            return
        if isinstance(msg, p.WorkerReady):
            self._worker_ready(rid, msg)
            return
        user = self.server_users.get(rid)
        if user is None:
            return  # an unregistered peer gets nothing and can send nothing
        self.servers[user].last_seen = now
        if isinstance(msg, p.Reply):
            key = (msg.client_id, msg.call_key)
            call = self.inflight.get(key)
            if call is None or call.server_rid != rid:
                return  # not a call this server is running: never forward it
            if msg.final and call.direct:
                # The server ended a call the broker gave one of its workers (shutting
                # down): the worker is being stopped too, or the call was still queued.
                self._stop_call(key, call, msg.body, kill=False)
                return
            self._deliver(key, msg.final, msg.body)
        elif isinstance(msg, p.WorkerGone):
            self._worker_gone(rid, msg)
        elif isinstance(msg, p.Bye):
            # Its workers' last events travel on their own connections and may arrive
            # after the BYE: give them a moment before failing the calls.
            self._drop_server(user, "server stopped", grace=BYE_GRACE)

    def _worker_reply(self, rid: bytes, msg: p.WorkerReply, ended: bool | None = None) -> None:
        """Events a worker sends straight to the broker (not through its server): routed
        only for a call in flight on a server of the user whose credential it carries,
        and for a call dispatched to a worker, only from that worker. Its final event
        makes the worker free for the next call (``ended``: whether the worker's own
        event was final, when ``msg`` is the broker's stand-in for it)."""
        key = (msg.client_id, msg.call_key)
        call = self.inflight.get(key)
        worker = self.workers.get(rid)
        # A call the broker dispatched is answered only by the worker it went to (none
        # while it waits here); a call a server dispatched, by any of its workers.
        deliver = call is not None and call.server_rid is not None and \
            call.user_id == msg.user_id and (call.worker_rid == rid if call.direct else True)
        # Also when the call is not delivered (cancelled, or a client that reused a
        # call id): the worker is free either way.
        free = (msg.final if ended is None else ended) and worker is not None and \
            worker.call == key and worker.user_id == msg.user_id
        if not (deliver or free):
            return  # finished, cancelled, or not this user's call: never forward it
        if not self.credential_ok(msg.user_id, msg.credential):
            self.stats["bad_worker_reply"] += 1
            return
        if deliver:
            self._deliver(key, msg.final, msg.body)
        if free:
            self._worker_free(worker)

    def _worker_ready(self, rid: bytes, msg: p.WorkerReady) -> None:
        """A worker of a direct server announces itself (and then keeps doing so while
        idle: how a restarted broker learns it again)."""
        known = self.workers.get(rid)
        if known is not None:
            # A busy one's WRDY may cross its call on the wire: only the final event
            # frees a worker, unless its connection broke since it was given the call.
            if msg.reconnected and known.call is not None and \
                    self.credential_ok(msg.user_id, msg.credential):
                self._lost_on_the_way(known)
            return
        if rid in self.server_users:
            return
        server = self.servers.get(msg.user_id)
        if server is None or not server.direct:
            return  # its server registers first; the worker says it again in a second
        if not rid.startswith(server.worker_prefix):
            return  # a worker of another server of this user (one being replaced)
        if not self.credential_ok(msg.user_id, msg.credential):
            self.stats["bad_worker_ready"] += 1
            return
        worker = self.workers[rid] = WorkerEntry(rid, msg.user_id, server.rid)
        server.workers.add(rid)
        self._worker_free(worker)

    def _lost_on_the_way(self, worker: WorkerEntry) -> None:
        """An idle worker says its connection broke while the broker thought it ran a
        call: the call or its final event was lost. It is failed, not sent again: it may
        have run."""
        key = worker.call
        call = self.inflight.get(key) if key is not None else None
        if key is not None and call is not None and call.worker_rid == worker.rid:
            self._deliver(key, True, p.final_error(
                key[1], call.legacy, "CALL_LOST", "the connection between the broker and "
                "the worker running the call broke; the call may or may not have run"))
        self._worker_free(worker)

    def _worker_free(self, worker: WorkerEntry) -> None:
        """``worker`` ended its call: give it the oldest queued call, or mark it idle."""
        worker.call = None
        server = self.servers.get(worker.user_id)
        if server is None or server.rid != worker.server_rid:
            self._retire(worker.rid, kill=False)
            return
        while server.queued:
            key, (frames, size) = server.queued.popitem(last=False)
            server.queued_bytes -= size
            call = self.inflight.get(key)
            if call is not None:
                self._run(worker, key, call, frames)
                return
        server.idle.append(worker.rid)

    def _retire(self, worker_rid: bytes, kill: bool = True) -> None:
        """Forget a worker; with ``kill``, ask its server to kill it."""
        worker = self.workers.pop(worker_rid, None)
        if worker is None:
            return
        server = self.servers.get(worker.user_id)
        if server is not None and server.rid == worker.server_rid:
            server.workers.discard(worker_rid)
            if worker_rid in server.idle:
                server.idle.remove(worker_rid)
        if kill:
            self.outbox.append((BACK, [worker.server_rid, *p.kill(worker_rid)]))

    def on_undeliverable(self, frames: list[Any]) -> None:
        """The socket loop could not send ``frames`` (``[routing id, *body]``) to that
        backend peer: it disconnected. A call meant for a worker goes back to the front
        of the queue (it never started) and the worker is retired."""
        worker = self.workers.get(p.frame_bytes(frames[0]))
        if worker is None:
            return  # a server: its heartbeats stop and the TTL fails its calls
        key = worker.call
        self._retire(worker.rid)
        call = self.inflight.get(key) if key is not None else None
        server = self.servers.get(worker.user_id)
        if call is None or call.worker_rid != worker.rid or server is None:
            return
        call.worker_rid = None
        body = frames[1:]  # the to_server layout
        self._queue(server, key, body, _size(p.to_server_rest(body)), first=True)
        if server.idle:
            self._worker_free(self.workers[server.idle.pop()])

    def _worker_gone(self, server_rid: bytes, msg: p.WorkerGone) -> None:
        """A server reports that one of its workers exited: its call, if any, failed."""
        worker = self.workers.get(msg.worker_id)
        if worker is None or worker.server_rid != server_rid:
            return  # retired already (killed on our request), or not this server's
        key = worker.call
        self._retire(msg.worker_id, kill=False)
        call = self.inflight.get(key) if key is not None else None
        if key is None or call is None:
            return
        text = msg.reason or worker_died(msg.exit_code)
        self._deliver(key, True, p.final_error(key[1], call.legacy, "WORKER_DIED", text))

    def _deliver(self, key: Key, final: bool, body: list[Any]) -> None:
        """Forward a reply to the call's client; the final one ends the call."""
        if final:
            del self.inflight[key]
        self._front(key[0], body)

    def credential_ok(self, user_id: str, credential: bytes) -> bool:
        """``credential`` is the server credential of ``user_id``. The expected value is
        kept per user: every event a worker sends is checked (an HMAC each time
        otherwise); only users that passed the routing checks get an entry."""
        expected = self._credentials.get(user_id)
        if expected is None:
            expected = self._credentials[user_id] = \
                p.server_credential(self.secret, user_id).encode()
        return hmac.compare_digest(expected, credential)

    def _register(self, rid: bytes, msg: p.Register) -> None:
        if not p.check_credential(self.secret, msg.user_id, msg.credential):
            self.stats["bad_registration"] += 1
            log.warning("refused a server registration for user %s: bad credential", msg.user_id)
            self.outbox.append((BACK, [rid, *p.register_ack(
                {"ok": False, "error": "bad credential"})]))
            return
        serving = self.server_users.get(rid)
        if serving is not None and serving != msg.user_id:
            # One connection serves one user; a second identity on it is refused so
            # the two maps (user -> server, server -> user) can never disagree.
            self.stats["bad_registration"] += 1
            self.outbox.append((BACK, [rid, *p.register_ack(
                {"ok": False, "error": "this connection already serves another user"})]))
            return
        current = self.servers.get(msg.user_id)
        if current is not None and current.rid != rid and \
                _started(current.info) > _started(msg.info):
            # The server a newer one replaced (built beside it, see
            # zexec.core.replacing) must not take the user back with its next heartbeat:
            # refused, it stops.
            self.stats["bad_registration"] += 1
            self.outbox.append((BACK, [rid, *p.register_ack(
                {"ok": False, "error": "replaced by a newer server of this user"})]))
            return
        if current is not None and current.rid != rid:
            # A replacement server (restart, force reinstall): the old one is gone.
            self._drop_server(msg.user_id, "server was replaced")
            current = None
        if current is None:
            log.info("server registered for user %s", msg.user_id)
            self.servers[msg.user_id] = ServerEntry(rid, msg.user_id, self.now, msg.info)
            self.server_users[rid] = msg.user_id
        else:
            current.last_seen = self.now
            current.info = msg.info
            if current.stopping:
                self._fail_queued(current, "SHUTTING_DOWN",
                                  f"the server of user {msg.user_id} is shutting down")
        # Quick calls never reach a direct server: it learns from here when the last
        # call of its user came (its idle timeout).
        last = self.last_activity.get(msg.user_id)
        ack = {"ok": True,
               "last_call_ago": None if last is None else round(self.now - last, 3)}
        self.outbox.append((BACK, [rid, *p.register_ack(ack)]))

    def _drop_server(self, user: str, why: str, grace: float = 0.0) -> None:
        entry = self.servers.pop(user, None)
        if entry is None:
            return
        self.server_users.pop(entry.rid, None)
        log.info("server for user %s dropped: %s", user, why)
        for rid in entry.workers:
            self.workers.pop(rid, None)
        for key, call in list(self.inflight.items()):
            if call.server_rid != entry.rid:
                continue
            # Events sent on a worker's own connection may still come: legacy calls
            # of a server that is not direct get theirs through the server.
            if grace > 0 and key not in entry.queued and \
                    (call.worker_rid is not None or not call.legacy):
                self.orphans[key] = (self.now + grace, why)
                continue
            self._server_gone(key, call, why)

    def _fail_queued(self, server: ServerEntry, code: str, text: str) -> None:
        """Fail the calls queued for ``server``'s workers."""
        for key in list(server.queued):
            call = self.inflight.get(key)
            if call is not None:
                self._stop_call(key, call, p.final_error(key[1], call.legacy, code, text))

    def _server_gone(self, key: Key, call: InFlight, why: str) -> None:
        """Fail an in-flight call whose server is gone."""
        text = f"the server for user {call.user_id} stopped responding ({why})"
        self._deliver(key, True, p.final_error(key[1], call.legacy, "SERVER_GONE", text))

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


def _started(info: dict[str, Any]) -> float:
    """When a server started (epoch seconds, from its registration; 0 if it did not say)."""
    value = info.get("started", 0.0)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else 0.0


def _size(frames: Sequence[Any]) -> int:
    """Bytes in ``frames`` (what a queued call holds in the broker's memory)."""
    return sum(len(f) for f in frames)
