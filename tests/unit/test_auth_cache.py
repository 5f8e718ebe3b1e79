"""CachingAuthenticator: TTLs per outcome (injected clock) and single-flight."""

import logging
import threading
import time

import pytest

from zexec.adapters.auth_cache import CachingAuthenticator
from zexec.core.errors import AuthUnavailable, Forbidden, Unauthenticated
from zexec.core.model import UserIdentity
from zexec.core.tokencache import TokenCache


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeAuthenticator:
    """Answers from ``outcomes`` (token -> identity or exception); counts checks.
    Checks of tokens in ``slow`` signal ``entered`` and then wait for ``release``."""

    def __init__(self, outcomes):
        self.outcomes = outcomes
        self.checks = 0
        self.slow = set()
        self.entered = threading.Event()
        self.release = threading.Event()

    def authenticate(self, token):
        self.checks += 1
        if token in self.slow:
            self.entered.set()
            self.release.wait()
        outcome = self.outcomes[token]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


ALICE = UserIdentity("u-alice", "alice")


@pytest.fixture
def clock():
    return Clock()


def make(outcomes, clock, **ttls):
    inner = FakeAuthenticator(outcomes)
    cache = TokenCache(**{"positive_ttl": 60, "negative_ttl": 5, "unavailable_ttl": 1, **ttls})
    return inner, CachingAuthenticator(inner, cache, clock=clock)


def test_valid_token_cached_for_positive_ttl(clock):
    inner, auth = make({"t": ALICE}, clock)
    assert auth.authenticate("t") == ALICE
    clock.now += 59.9
    assert auth.authenticate("t") == ALICE
    assert inner.checks == 1
    clock.now += 0.1
    assert auth.authenticate("t") == ALICE
    assert inner.checks == 2


@pytest.mark.parametrize(
    ("error", "ttl"),
    [(Unauthenticated("bad"), 5), (Forbidden("no"), 5), (AuthUnavailable("down"), 1)],
)
def test_rejections_cached_for_their_ttl(clock, error, ttl):
    inner, auth = make({"t": error}, clock)
    for _ in range(3):
        with pytest.raises(type(error), match=str(error)):
            auth.authenticate("t")
        clock.now += ttl / 4
    assert inner.checks == 1
    clock.now += ttl
    with pytest.raises(type(error)):
        auth.authenticate("t")
    assert inner.checks == 2


def test_outage_does_not_outlive_itself(clock):
    inner, auth = make({"t": AuthUnavailable("down")}, clock)
    with pytest.raises(AuthUnavailable):
        auth.authenticate("t")
    inner.outcomes["t"] = ALICE  # provider is back
    clock.now += 1
    assert auth.authenticate("t") == ALICE


def test_cached_errors_are_fresh_instances(clock):
    _, auth = make({"t": Unauthenticated("bad")}, clock)
    raised = []
    for _ in range(2):
        with pytest.raises(Unauthenticated) as exc:
            auth.authenticate("t")
        raised.append(exc.value)
    assert raised[0] is not raised[1]
    assert str(raised[0]) == str(raised[1]) == "bad"


def test_tokens_are_cached_separately(clock):
    inner, auth = make({"a": ALICE, "b": Unauthenticated("bad")}, clock)
    assert auth.authenticate("a") == ALICE
    with pytest.raises(Unauthenticated):
        auth.authenticate("b")
    assert auth.authenticate("a") == ALICE
    assert inner.checks == 2


def test_unexpected_error_is_unavailable_and_not_cached(clock):
    inner, auth = make({"t": RuntimeError("bug with token t0k")}, clock)
    with pytest.raises(AuthUnavailable) as exc:
        auth.authenticate("t")
    assert "RuntimeError" in str(exc.value) and "t0k" not in str(exc.value)
    inner.outcomes["t"] = ALICE
    assert auth.authenticate("t") == ALICE  # same clock time: nothing was cached


def run_concurrently(auth, token, n):
    results = [None] * n

    def call(i):
        try:
            results[i] = auth.authenticate(token)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def wait_until(predicate):
    while not predicate():  # bounded by the test timeout, not a wall-clock threshold
        time.sleep(0.001)


@pytest.mark.parametrize("outcome", [ALICE, Unauthenticated("bad"), RuntimeError("bug")])
def test_single_flight(clock, outcome):
    """Callers arriving while a token is being checked wait for that check."""
    inner, auth = make({"t": outcome}, clock)
    inner.slow.add("t")
    leader, leader_result = run_concurrently(auth, "t", 1)
    inner.entered.wait()
    followers, results = run_concurrently(auth, "t", 8)
    wait_until(lambda: auth.waiting == 8)
    assert inner.checks == 1
    inner.release.set()
    for t in leader + followers:
        t.join()
    assert inner.checks == 1
    assert auth.waiting == 0
    for r in leader_result + results:
        if isinstance(outcome, UserIdentity):
            assert r == ALICE
        else:
            assert isinstance(
                r, Unauthenticated if isinstance(outcome, Unauthenticated) else AuthUnavailable
            )


def test_single_flight_is_per_token(clock):
    """A slow check of one token does not hold up callers with another token."""
    bob = UserIdentity("u-bob")
    inner, auth = make({"slow": ALICE, "fast": bob}, clock)
    inner.slow.add("slow")
    slow, slow_result = run_concurrently(auth, "slow", 1)
    inner.entered.wait()
    assert auth.authenticate("fast") == bob
    inner.release.set()
    slow[0].join()
    assert slow_result == [ALICE]
    assert inner.checks == 2


def test_token_never_logged(clock, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "s3cret-tok"
    _, auth = make({secret: RuntimeError(f"boom {secret}")}, clock)
    with pytest.raises(AuthUnavailable) as exc:
        auth.authenticate(secret)
    assert secret not in caplog.text
    assert secret not in str(exc.value)


def test_close_closes_inner(clock):
    class Closable(FakeAuthenticator):
        closed = False

        def close(self):
            self.closed = True

    inner = Closable({})
    CachingAuthenticator(inner, clock=clock).close()
    assert inner.closed
    CachingAuthenticator(FakeAuthenticator({}), clock=clock).close()  # no close: fine


def test_a_flood_of_refused_tokens_never_evicts_valid_ones():
    cache = TokenCache(max_entries=10, max_refused=100)
    alice = UserIdentity(user_id="alice-id", username="alice")
    cache.put(b"alice", alice, 0.0)
    for i in range(10_000):
        cache.put(b"bad-%d" % i, Unauthenticated("no"), 0.0)
    assert cache.get(b"alice", 1.0) == alice
    assert len(cache) == 101  # the refused side holds its newest 100
    assert cache.get(b"bad-9999", 1.0) is not None and cache.get(b"bad-0", 1.0) is None


def test_a_token_that_becomes_valid_is_not_also_cached_as_refused():
    cache = TokenCache()
    cache.put(b"t", Unauthenticated("no"), 0.0)
    alice = UserIdentity(user_id="alice-id", username="alice")
    cache.put(b"t", alice, 1.0)
    assert cache.get(b"t", 2.0) == alice and len(cache) == 1
