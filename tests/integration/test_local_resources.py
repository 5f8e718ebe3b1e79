"""Resources on the local orchestrator, against a real ``zexec up`` stack (real uv build,
real server, its isolation as ``auto`` picks it): a server asked for ``workers=2,
cpus=1`` runs two worker processes at once, pinned to one core, with the numeric
libraries' thread pools sized to it; what the machine cannot give is a clear 422."""

from __future__ import annotations

import json
import os
import uuid

import pytest

import zexec
from tests.helpers.cli import zexec_cli
from zexec.apps.client.connect import PYTHON
from zexec.core.resources import THREAD_VARS

pytestmark = pytest.mark.timeout(900)  # an env build; a hang guard, not a measurement


@pytest.fixture(scope="module")
def conn(tmp_path_factory):
    state = tmp_path_factory.mktemp("resources") / "state"
    with pytest.MonkeyPatch.context() as mp:
        # Site limits high enough that the machine's own bounds are what refuses.
        mp.setenv("ZEXEC_DEPLOY_MAX_CPUS", "1024")
        mp.setenv("ZEXEC_DEPLOY_MAX_GPUS", "64")
        zexec_cli("up", state=state)
    stack = json.loads((state / "stack.json").read_text())
    c = zexec.connect(stack["ep_api_url"], stack["tokens"]["alice"])
    yield c
    c.close()
    zexec_cli("down", state=state, check=False)


def observe(rendezvous: str, call: int) -> dict:
    """Runs remotely: says where it runs, after waiting (at most 2 minutes) until the
    other call has started too, which only a second worker can do meanwhile."""
    import os
    import time

    d = os.path.join(os.path.expanduser("~"), rendezvous)
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, str(call)), "w").close()
    deadline = time.monotonic() + 120
    while len(os.listdir(d)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    with open("/proc/self/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]
    return {"worker": f"{os.getpid()}@{start}", "together": len(os.listdir(d)) >= 2,
            "affinity": sorted(os.sched_getaffinity(0)),
            "env": {k: os.environ.get(k) for k in THREAD_VARS}}


def where() -> tuple[list[int], dict]:
    import os

    return sorted(os.sched_getaffinity(0)), {k: os.environ.get(k) for k in THREAD_VARS}


def test_workers_and_cpus_are_real_processes_and_affinity(conn):
    st = conn.environment([f"python=={PYTHON}"], progress=False, timeout=600,
                          workers=2, cpus=1)
    assert st["env"]["resources"] == {"cpus": 1.0, "workers": 2}
    assert st["resources"]["workers"] == 2 and st["resources"]["cpus"] == 1.0
    assert st["resources"]["memory"] is None  # not enforced here, and it says so
    assert "memory is not enforced" in st["resources"]["note"]
    f = zexec.remote(observe)
    rendezvous = f"rv-{uuid.uuid4().hex}"
    futures = [f.submit(rendezvous, i) for i in range(2)]
    a, b = (fut.result(timeout=300) for fut in futures)
    assert a["together"] and b["together"], "the two calls did not run at the same time"
    assert a["worker"] != b["worker"]  # two worker processes
    for seen in (a, b):
        assert len(seen["affinity"]) == 1  # ceil(cpus) cores
        assert seen["affinity"][0] in os.sched_getaffinity(0)
        assert seen["env"] == dict.fromkeys(THREAD_VARS, "1")  # 1 core / 2 workers -> 1


def test_the_same_requirements_with_other_resources_replace_the_server(conn):
    base = [f"python=={PYTHON}"]
    conn.environment(base, progress=False, timeout=600, workers=2, cpus=1)
    with pytest.raises(zexec.EnvironmentConflict, match="requested site defaults"):
        conn.environment(base, progress=False)
    st = conn.environment(base, progress=False, timeout=600, force=True)
    assert "resources" not in st["env"] and st["resources"]["workers"] == 1  # the default
    affinity, env = zexec.remote(where)()
    assert set(affinity) == os.sched_getaffinity(0)  # not pinned: as without resources
    assert env == {k: os.environ.get(k) for k in THREAD_VARS}  # and no thread variables


def test_more_cores_or_gpus_than_the_machine_has_are_refused(conn):
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(zexec.InvalidEnvironment, match=f"this machine has {cores} core"):
        conn.environment([f"python=={PYTHON}"], progress=False, cpus=cores + 1, force=True)
    if not any(n.startswith("nvidia") and n[6:].isdigit() for n in os.listdir("/dev")):
        with pytest.raises(zexec.InvalidEnvironment, match="this machine has 0 GPU"):
            conn.environment([f"python=={PYTHON}"], progress=False, gpus=1, force=True)
    assert conn.status()["phase"] == "ready"  # refused before anything was stopped
