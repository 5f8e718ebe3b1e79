"""The router's backend side: servers register and beat, workers say they are idle and
send events, servers report workers gone; calls of a server that is gone fail."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from typing import Any

from zexec.core import protocol as p
from zexec.core.broker.state import (
    BACK,
    BYE_GRACE,
    InFlight,
    Key,
    ServerEntry,
    WorkerEntry,
    size_of,
    started_at,
)
from zexec.core.errors import ProtocolError, ZexecError
from zexec.core.exits import worker_died

log = logging.getLogger("zexec.broker")

#: Replies bigger than this are announced to their client before they are sent.
ANNOUNCE_BYTES = 8 << 20


class BackendSide:
    """The methods of :class:`zexec.core.broker.router.Router` that serve the backend;
    they share its state (see ``Router.__init__``)."""

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

    def _parse(self, frames: Sequence[Any]) -> tuple[bytes, Any] | None:
        """``(rid, message)`` of a backend message ``[rid, b"", *body]``; None (counted)
        for a malformed one."""
        if len(frames) < 3 or p.frame_bytes(frames[1]) != b"":
            self.stats["malformed_backend"] += 1
            return None
        try:
            return p.frame_bytes(frames[0]), p.parse_backend(frames[2:])
        except ProtocolError as exc:
            self.stats["malformed_backend"] += 1
            log.debug("malformed backend message: %s", exc)
            return None

    def on_backend_refused(self, frames: Sequence[Any], why: ZexecError, now: float) -> None:
        """A backend message the transport did not read whole (``why``: a limit it broke,
        or a credential it lacked; skipped frames are empty placeholders). A reply of a
        call in flight ends that call with ``why`` (its client learns the limit); anything
        else is dropped."""
        self.now = now
        parsed = self._parse(frames)
        if parsed is None:
            return
        rid, msg = parsed
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
        parsed = self._parse(frames)
        if parsed is None:
            return
        rid, msg = parsed
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
        self._queue(server, key, body, size_of(p.to_server_rest(body)), first=True)
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
        """Forward a reply to the call's client; the final one ends the call. A v1 reply
        of more than :data:`ANNOUNCE_BYTES` is announced first (a PONG saying
        ``incoming``): ZeroMQ hands over whole messages, so while a big one is on the
        wire its client hears nothing, not even the answers to its pings, and would take
        a slow transfer for a dead broker."""
        call = self.inflight.pop(key) if final else self.inflight.get(key)
        if call is not None and not call.legacy and len(body) > 4:
            size = size_of(body)
            if size > ANNOUNCE_BYTES:
                self._front(key[0], p.v1_pong({"incoming": size}))
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
                started_at(current.info) > started_at(msg.info):
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
