"""Prometheus metrics of one Deploy API instance, in its own ``CollectorRegistry``.

No process-global registry: two apps in one process (tests, ``zexec up``) keep separate
counts. Exposed by ``GET {prefix}/metrics``:

* ``zexec_deploy_http_requests_total{method,route,status}``
* ``zexec_deploy_spawn_total{outcome}``: created / unchanged / replaced / conflict /
  invalid / failed
* ``zexec_deploy_terminate_total{outcome}``: terminated / absent
* ``zexec_deploy_servers{phase}``: servers per phase, read from the orchestrator at
  scrape time (a failing orchestrator yields no samples rather than a failed scrape).
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from zexec.core.model import PHASES
from zexec.core.ports import Orchestrator

log = logging.getLogger(__name__)


class _ServersCollector(Collector):
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fam = GaugeMetricFamily(
            "zexec_deploy_servers",
            "User servers known to the orchestrator, by phase",
            labels=["phase"],
        )
        try:
            counts = Tally(s.phase for s in self.orchestrator.list())
        except Exception:
            log.warning("orchestrator.list() failed during a metrics scrape", exc_info=True)
            return
        for phase in PHASES:
            fam.add_metric([phase], counts.get(phase, 0))
        yield fam


class DeployMetrics:
    """The counters the Deploy API updates, registered in ``self.registry``."""

    def __init__(self, orchestrator: Orchestrator | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "zexec_deploy_http_requests",
            "HTTP requests served",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.spawns = Counter(
            "zexec_deploy_spawn",
            "Spawn requests by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.terminates = Counter(
            "zexec_deploy_terminate",
            "Terminate requests by outcome",
            ["outcome"],
            registry=self.registry,
        )
        if orchestrator is not None:
            self.registry.register(_ServersCollector(orchestrator))

    def render(self) -> bytes:
        return generate_latest(self.registry)
