"""Driving the broker's routing state machine in tests: peers, tokens and frames.

Messages go in through ``on_frontend`` / ``on_backend`` / ``on_auth_result`` / ``tick``
with an explicit ``now``; what the broker would send is read from ``router.outbox``.
"""

from __future__ import annotations

import pickle

from zexec.core import protocol as p
from zexec.core.broker.router import BACK, Router
from zexec.core.model import Event, UserIdentity
from zexec.core.tokencache import TokenCache, token_key

SECRET = b"broker-secret"
ALICE = UserIdentity("alice-id", "alice")
BOB = UserIdentity("bob-id", "bob")
T_ALICE, T_BOB, T_BAD = "token-alice", "token-bob", "token-bad"

SRV_A, SRV_A2, SRV_B, EVIL = b"srv-alice", b"srv-alice-2", b"srv-bob", b"impostor"
WORKER = b"worker-of-alice"  # a worker's own connection: never registered
CLI, CLI2, CLI_B = b"client-1", b"client-2", b"client-bob"
ID1, ID2, ID3 = b"1" * 16, b"2" * 16, b"3" * 16
REST = [b'{"ser":"dill","py":"3.11","fn":"f"}', b"fn-bytes", b"args-bytes", b"oob-buffer"]


def cred(user_id: str, secret: bytes = SECRET) -> str:
    return p.server_credential(secret, user_id)


def make(**kw) -> Router:
    cache = TokenCache(positive_ttl=60.0, negative_ttl=5.0, unavailable_ttl=1.0)
    return Router(SECRET, cache, server_ttl=2.0, **kw)


def take(r: Router) -> list[tuple[str, list]]:
    out = [(dest, [p.frame_bytes(f) for f in frames]) for dest, frames in r.outbox]
    r.outbox.clear()
    return out


def front(r: Router, rid: bytes, frames: list, now: float) -> None:
    """A client message: ``frames`` as the client's DEALER sends them (leading b"")."""
    r.on_frontend([rid, *frames], now)


def back(r: Router, rid: bytes, frames: list, now: float) -> None:
    r.on_backend([rid, *frames], now)


def call(token: str, call_id: bytes, rest=REST) -> list:
    return p.v1_request(p.CALL, token, call_id, rest)


def cancel(token: str, call_id: bytes, reason: bytes = b"stop") -> list:
    return p.v1_request(p.CANCEL, token, call_id, [reason])


def legacy_call(token: str) -> list:
    return [b"", token.encode(), b"dill-fn", b"dill-args"]


def register(r: Router, rid: bytes, user: UserIdentity, now: float, credential: str | None = None,
             info: dict | None = None) -> dict:
    back(r, rid, p.register(user.user_id, credential or cred(user.user_id), info or {}), now)
    out = take(r)
    assert len(out) == 1
    dest, frames = out[0]
    assert dest == BACK and frames[:4] == [rid, b"", p.MAGIC, p.REGISTER_ACK]
    ack = p.load_header(frames[4])
    ack.pop("last_call_ago", None)  # checked where it matters
    return ack


def login(r: Router, token: str, outcome, now: float) -> None:
    """Make ``token``'s outcome cached (as if a check had completed)."""
    r.on_auth_result(token_key(token), outcome, now)
    take(r)


def ready(now: float = 0.0) -> Router:
    """alice and bob logged in, each with a registered server."""
    r = make()
    login(r, T_ALICE, ALICE, now)
    login(r, T_BOB, BOB, now)
    assert register(r, SRV_A, ALICE, now) == {"ok": True}
    assert register(r, SRV_B, BOB, now) == {"ok": True}
    return r


def client_event(frames: list) -> Event:
    assert frames[1] == b""
    ev = p.parse_client_bound(frames[2:])
    assert isinstance(ev, Event)
    return ev


def legacy_reply(frames: list):
    assert frames[1] == b"" and len(frames) == 3
    return pickle.loads(frames[2])


def to_server(frames: list) -> tuple[bytes, p.ServerBound]:
    assert frames[1] == b""
    return frames[0], p.parse_server_bound(frames[2:])
