"""Resources a user asks for their server (cpus, memory, gpus, workers), checked against
the site's limits. Pure functions: the Deploy API calls :func:`parse_resources` on a
spawn's fields, the orchestrators turn the result into what they run.

Names and units follow Ray and Modal: ``cpus`` a float of cores (Ray's ``num_cpus``,
Modal's ``cpu``; millicore precision, as Kubernetes counts), ``memory`` an int of MiB
(Modal's ``memory``), ``gpus`` whole GPUs, ``workers`` the server's worker processes.
A field left out (or None) is the site's default, i.e. what the orchestrator does
without a request; ``gpus=0`` and ``workers`` equal to the site's default worker
count are normalised to "left out", so asking for the default explicitly is the same
server as not asking.

Every refusal is :class:`~zexec.core.errors.InvalidEnvironment` (HTTP 422); one beyond
a limit is :class:`~zexec.core.errors.ResourceLimitExceeded`, whose message names the
limit, its value, the setting and the chart value that hold it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zexec.core.errors import InvalidEnvironment, ResourceLimitExceeded
from zexec.core.model import Resources

FIELDS = ("cpus", "memory", "gpus", "workers")
#: Setting and chart value of each limit, for the messages.
LIMIT_NAMES = {
    "cpus": ("ZEXEC_DEPLOY_MAX_CPUS", "deployApi.resourceLimits.maxCpus"),
    "memory": ("ZEXEC_DEPLOY_MAX_MEMORY", "deployApi.resourceLimits.maxMemory"),
    "gpus": ("ZEXEC_DEPLOY_MAX_GPUS", "deployApi.resourceLimits.maxGpus"),
    "workers": ("ZEXEC_DEPLOY_MAX_WORKERS", "deployApi.resourceLimits.maxWorkers"),
}
_UNITS = {"cpus": "cpus", "memory": "MiB", "gpus": "gpus", "workers": "workers"}


@dataclass(frozen=True)
class ResourceLimits:
    """The most one server may ask for (``max_memory`` in MiB), and the site's default
    worker count (a request equal to it is normalised away; None: none is)."""

    max_cpus: float
    max_memory: int
    max_gpus: int
    max_workers: int
    default_workers: int | None = None


def _number(name: str, value: Any, integer: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "a whole number" if integer else "a number"
        hint = " of MiB (e.g. 4096 for 4 GiB)" if name == "memory" else ""
        raise InvalidEnvironment(f"{name} must be {kind}{hint}, not {value!r}")
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise InvalidEnvironment(f"{name} must be a whole number, not {value!r}")
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidEnvironment(f"{name} must be a finite number, not {value!r}")
    return value


def _over(name: str, value: float | int, limit: float | int) -> ResourceLimitExceeded:
    setting, chart = LIMIT_NAMES[name]
    unit = _UNITS[name]
    if name == "gpus" and limit == 0:
        return ResourceLimitExceeded(
            f"gpus={value} asked for, but this site allows no GPUs ({setting}=0, chart value "
            f"{chart})")
    return ResourceLimitExceeded(
        f"{name}={value:g} is above this site's limit of {limit:g} {unit} per server "
        f"({setting}={limit:g}, chart value {chart}); ask for at most {limit:g}")


def parse_resources(raw: Mapping[str, Any], limits: ResourceLimits) -> Resources:
    """The :class:`Resources` that ``raw`` (``cpus``, ``memory``, ``gpus``, ``workers``;
    None or absent = the default) asks for, validated against ``limits``."""
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise InvalidEnvironment(f"unknown resource(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(FIELDS)}")
    out: dict[str, Any] = {}
    cpus = raw.get("cpus")
    if cpus is not None:
        cpus = _number("cpus", cpus, integer=False)
        milli = round(cpus * 1000)
        if milli <= 0:
            raise InvalidEnvironment(f"cpus must be at least 0.001 (one millicore), not {cpus!r}")
        if cpus > limits.max_cpus:
            raise _over("cpus", cpus, limits.max_cpus)
        out["cpus"] = milli / 1000
    memory = raw.get("memory")
    if memory is not None:
        if isinstance(memory, str):
            raise InvalidEnvironment(
                f"memory is a whole number of MiB (e.g. 4096 for 4 GiB), not {memory!r}")
        memory = _number("memory", memory, integer=True)
        if memory <= 0:
            raise InvalidEnvironment(f"memory must be a positive number of MiB, not {memory}")
        if memory > limits.max_memory:
            raise _over("memory", memory, limits.max_memory)
        out["memory"] = memory
    gpus = raw.get("gpus")
    if gpus is not None:
        gpus = _number("gpus", gpus, integer=True)
        if gpus < 0:
            raise InvalidEnvironment(f"gpus must be 0 or more, not {gpus}")
        if gpus > limits.max_gpus:
            raise _over("gpus", gpus, limits.max_gpus)
        if gpus:
            out["gpus"] = gpus
    workers = raw.get("workers")
    if workers is not None:
        workers = _number("workers", workers, integer=True)
        if workers < 1:
            raise InvalidEnvironment(f"workers must be 1 or more, not {workers}")
        if workers > limits.max_workers:
            raise _over("workers", workers, limits.max_workers)
        if workers != limits.default_workers:
            out["workers"] = workers
    return Resources(**out)


def resources_dict(res: Resources) -> dict[str, Any]:
    """The fields asked for (None ones left out): how records and JSON carry them."""
    return {k: getattr(res, k) for k in FIELDS if getattr(res, k) is not None}


def resources_from_dict(raw: Any) -> Resources:
    """The inverse of :func:`resources_dict` for stored records (no limits applied: what
    was accepted once stays readable); ValueError for something else."""
    if raw is None:
        return Resources()
    if not isinstance(raw, dict) or set(raw) - set(FIELDS):
        raise ValueError(f"not a resources record: {raw!r}")
    try:
        return Resources(
            cpus=None if raw.get("cpus") is None else float(raw["cpus"]),
            **{k: None if raw.get(k) is None else int(raw[k]) for k in FIELDS[1:]})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a resources record: {exc}") from None


def describe_resources(res: Resources) -> str:
    """``cpus=1, workers=2`` (``site defaults`` when nothing is asked for)."""
    parts = [f"{k}={v:g}" + (" MiB" if k == "memory" else "")
             for k, v in resources_dict(res).items()]
    return ", ".join(parts) or "site defaults"


#: Thread-pool variables of the numeric libraries (as Ray sets them for a task), so that
#: numpy & co. do not start one thread per core of the machine in every worker.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def thread_env(cores: int, workers: int) -> dict[str, str]:
    """The thread variables for a server of ``workers`` processes sharing ``cores``
    cores: each worker gets its share, at least one thread."""
    n = str(max(1, cores // max(1, workers)))
    return dict.fromkeys(THREAD_VARS, n)


_CPU = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(m?)")
_MEM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([KMGTPE]i?|k|m)?")
_MEM_UNITS = {None: 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
              "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
              "Ei": 2**60, "m": 1e-3}


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity in cores (``"250m"`` -> 0.25); ValueError otherwise."""
    m = _CPU.fullmatch(str(quantity).strip())
    if m is None:
        raise ValueError(f"{quantity!r} is not a CPU quantity")
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def memory_mib(quantity: str) -> float:
    """A Kubernetes memory quantity in MiB (``"4Gi"`` -> 4096); ValueError otherwise."""
    m = _MEM.fullmatch(str(quantity).strip())
    if m is None:
        raise ValueError(f"{quantity!r} is not a memory quantity")
    return float(m.group(1)) * _MEM_UNITS[m.group(2)] / 2**20
