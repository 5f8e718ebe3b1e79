"""A server's resources on this machine, without root-only features (no cgroups).

* ``workers``: the server's worker pool size (``ZEXEC_SERVER_WORKERS``); the
  orchestrator's ``server_workers`` (``ZEXEC_DEPLOY_SERVER_WORKERS``) when not asked.
* ``cpus``: the server and its workers are pinned to ``ceil(cpus)`` cores (CPU affinity,
  inherited by every process they start), the least used by other pinned servers, and
  the numeric libraries' thread pools are sized to each worker's share of them
  (``OMP_NUM_THREADS`` ... as Ray does), so numpy does not start a thread per core of
  the machine in every worker. Affinity is a bound the user's code may widen again
  (``os.sched_setaffinity`` needs no privilege): it keeps a well-behaved server to its
  share, it is not a security boundary.
* ``memory``: not enforced. ``RLIMIT_AS`` would count address space numpy, BLAS thread
  stacks and glibc's malloc arenas reserve but never use, and fail ordinary code;
  a real bound needs a cgroup, which needs root (or a delegated systemd unit). The
  status says so (``resources_note``).
* ``gpus``: at most the NVIDIA devices this machine has (``/dev/nvidia<N>``);
  ``CUDA_VISIBLE_DEVICES`` names the first ``gpus`` of them. Not exclusive either.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from zexec.core.errors import InvalidEnvironment
from zexec.core.model import Resources
from zexec.core.resources import thread_env

MEMORY_NOTE = ("memory is not enforced by the local orchestrator (it would need a cgroup, "
               "i.e. root); cpus are CPU affinity, which code may widen")
_NVIDIA = re.compile(r"nvidia(\d+)")


def available_cores() -> list[int]:
    """The cores this process may run on (its affinity), sorted."""
    return sorted(os.sched_getaffinity(0))


def gpu_devices(dev: Path = Path("/dev")) -> list[int]:
    """Indexes of the NVIDIA GPUs this machine shows (``/dev/nvidia0`` ...)."""
    try:
        names = [p.name for p in dev.iterdir()]
    except OSError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _NVIDIA.fullmatch(n)))


def check(res: Resources) -> None:
    """Refuse what this machine cannot give (InvalidEnvironment, HTTP 422)."""
    cores = len(available_cores())
    if res.cpus is not None and math.ceil(res.cpus) > cores:
        raise InvalidEnvironment(f"cpus={res.cpus:g} asked for, but this machine has "
                                 f"{cores} core(s) for servers")
    if res.gpus:
        found = len(gpu_devices())
        if res.gpus > found:
            raise InvalidEnvironment(f"gpus={res.gpus} asked for, but this machine has "
                                     f"{found} GPU(s)" + ("" if found else " (no /dev/nvidia*)"))


def pick_cores(cpus: float, taken: Iterable[int]) -> tuple[int, ...]:
    """``ceil(cpus)`` cores of this process's affinity, those fewest other servers are
    pinned to (``taken``: their cores, with repeats) first."""
    load = Counter(taken)
    cores = sorted(available_cores(), key=lambda c: (load[c], c))
    return tuple(sorted(cores[: math.ceil(cpus)]))


def server_env(res: Resources, workers: int, cores: tuple[int, ...]) -> dict[str, str]:
    """The variables of a server with ``res``, ``workers`` worker processes, pinned to
    ``cores`` (none: not pinned, no thread variables, as without a request)."""
    env = {"ZEXEC_SERVER_WORKERS": str(workers)}
    if cores:
        env.update(thread_env(len(cores), workers))
    if res.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_devices()[: res.gpus]))
    return env


def granted(res: Resources, workers: int) -> Resources:
    """What a server with ``res`` gets here (None: unbounded)."""
    return Resources(cpus=res.cpus, memory=None, gpus=res.gpus or 0, workers=workers)
