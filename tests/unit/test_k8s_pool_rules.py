"""The warm pool's pure decisions (zexec.adapters.orchestrator_k8s.pool_rules) and the
pool-mode server's binding request (zexec.apps.server.adoption), on made-up pods and a
scripted opener."""

from __future__ import annotations

import io
import json
import urllib.error

import pytest

from zexec.adapters.orchestrator_k8s import pool_rules as rules
from zexec.apps.server.adoption import await_binding, bound
from zexec.core.errors import ConfigurationError
from zexec.core.protocol import server_credential
from zexec.settings import ServerSettings

SECRET = b"s3cret"


def pod(name, *, waiting=None, claimed=None, bound_=None, phase="Running", digest="d1",
        created=0.0, deleting=False):
    ann = {"zexec.io/env-digest": digest, "zexec.io/created-at": str(created)}
    if waiting is not None:
        ann[rules.ANN_WAITING] = str(waiting)
    if claimed:
        ann[rules.ANN_CLAIMED] = claimed
    if bound_:
        ann[rules.ANN_BOUND] = "1"
    meta = {"name": name, "annotations": ann, "labels": {rules.LABEL_POOL: "true"}}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


def test_pool_keys_are_per_pod_and_not_broker_credentials():
    a, b = rules.pool_key(SECRET, "p1"), rules.pool_key(SECRET, "p2")
    assert a != b and rules.check_pool_key(SECRET, "p1", a)
    assert not rules.check_pool_key(SECRET, "p1", b)
    assert not rules.check_pool_key(b"other", "p1", a)
    assert a != server_credential(SECRET, "p1")  # another HMAC domain


def test_locate_reads_both_kinds_of_pod_reference():
    assert rules.locate("zexec-server-x", "zexec-u-al") == ("zexec-u-al", "zexec-server-x")
    assert rules.locate("zexec-pool/zexec-pool-1", "zexec-u-al") == ("zexec-pool",
                                                                     "zexec-pool-1")


def test_adoptable_pods_are_waiting_running_unclaimed_of_the_environment():
    pods = [pod("late", waiting=5), pod("early", waiting=1), pod("starting"),
            pod("taken", waiting=0, claimed="u"), pod("other-env", waiting=0, digest="d2"),
            pod("pending", waiting=0, phase="Pending"), pod("going", waiting=0, deleting=True),
            pod("ended", waiting=0, phase="Failed")]
    assert [p["metadata"]["name"] for p in rules.adoptable(pods, "d1")] == ["early", "late"]


def test_binding_states():
    assert rules.binding(None) == ("refuse", "no such pool pod")
    assert rules.binding(pod("p")) == ("announce", "")
    assert rules.binding(pod("p", waiting=1)) == ("wait", "")
    assert rules.binding(pod("p", waiting=1, claimed="alice")) == ("bind", "alice")
    assert rules.binding(pod("p", waiting=1, claimed="alice", bound_=True))[0] == "refuse"
    assert rules.binding(pod("p", waiting=1, deleting=True))[0] == "refuse"
    assert rules.binding(pod("p", waiting=1, phase="Succeeded"))[0] == "refuse"


def test_a_registered_bound_pod_is_ready_before_its_probe_says_so():
    starting = pod("p", waiting=1, claimed="alice", bound_=True)
    starting["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    assert rules.server_phase(starting).phase == "starting"
    starting["metadata"]["annotations"][rules.ANN_REGISTERED] = "12.5"
    assert (rules.server_phase(starting).phase, rules.server_phase(starting).since) == \
        ("ready", 12.5)
    ended = pod("p", claimed="alice", bound_=True, phase="Succeeded")
    ended["metadata"]["annotations"][rules.ANN_REGISTERED] = "12.5"
    assert rules.server_phase(ended).phase == "terminated"  # the probe's lag only
    unbound = pod("p", waiting=1)
    unbound["metadata"]["annotations"][rules.ANN_REGISTERED] = "12.5"
    assert rules.server_phase(unbound).phase == "starting"


def test_top_up_counts_spares_and_drops_what_is_not_one():
    assert rules.top_up([], 2, "d1") == (2, [])
    pods = [pod("a", waiting=1, created=1), pod("b", created=2), pod("c", created=3),
            pod("old-env", digest="d0"), pod("dead", phase="Failed"),
            pod("mine", claimed="u"), pod("mine-ended", claimed="u", phase="Succeeded")]
    missing, drop = rules.top_up(pods, 2, "d1")
    # Claimed pods are never the pool's to drop (their user's server, ended or not).
    assert missing == 0 and sorted(drop) == ["c", "dead", "old-env"]
    assert rules.top_up(pods, 5, "d1")[0] == 2


def test_orphaned_adopted_pods():
    adopted = pod("p", claimed="u", created=100)
    ns = {"metadata": {"annotations": {"zexec.io/pod": "zexec-pool/p"}}}
    assert not rules.orphaned(pod("q"), None, "zexec-pool", 1000)  # a spare is no orphan
    assert not rules.orphaned(adopted, ns, "zexec-pool", 1000)
    assert not rules.orphaned(adopted, None, "zexec-pool", 120)  # just claimed: grace
    assert rules.orphaned(adopted, None, "zexec-pool", 1000)
    replaced = {"metadata": {"annotations": {"zexec.io/pod": "zexec-server-new"}}}
    assert rules.orphaned(adopted, replaced, "zexec-pool", 1000)


class Answer(io.BytesIO):
    def __init__(self, status, body=b""):
        super().__init__(body)
        self.status = status


def scripted(*answers):
    asked = []

    def opener(request, timeout):
        asked.append((request.full_url, request.headers["Authorization"],
                      json.loads(request.data)))
        a = answers[len(asked) - 1]
        if isinstance(a, Exception):
            raise a
        return a
    return opener, asked


def test_await_binding_polls_until_adopted_and_retries_an_unreachable_api():
    opener, asked = scripted(
        Answer(204), urllib.error.URLError("connection refused"),
        Answer(200, json.dumps({"user_id": "alice", "credential": "c"}).encode()))
    got = await_binding("http://d/rexec/", "p1", "k", opener=opener, retry=0)
    assert got == ("alice", "c")
    assert asked[0] == ("http://d/rexec/pool/bind", "Bearer k", {"pod": "p1", "wait": 20.0})
    assert len(asked) == 3


def test_await_binding_stops_on_a_refusal():
    refused = urllib.error.HTTPError("u", 403, "Forbidden", {}, io.BytesIO(b'{"detail": "x"}'))
    opener, _ = scripted(refused)
    with pytest.raises(ConfigurationError, match="refused"):
        await_binding("http://d/rexec", "p1", "k", opener=opener, retry=0)


def test_bound_leaves_ordinary_settings_alone_and_checks_pool_ones():
    plain = ServerSettings(user_id="bob", credential="c")
    assert bound(plain) is plain
    with pytest.raises(ConfigurationError, match="POOL_POD"):
        bound(ServerSettings(pool_url="http://d/rexec"))
