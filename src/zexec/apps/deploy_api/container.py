"""Composition root of the Deploy API: settings -> orchestrator + authenticator -> app.

:class:`DeployContainer` (dependency_injector) picks the orchestrator by
``DeploySettings.orchestrator`` with a ``Selector``; :func:`build_app_from_settings` is
the one call ``python -m zexec.apps.deploy_api`` and ``zexec up`` make. Tests override
a provider (``orchestrator=...``, ``authenticator=...``) instead of patching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dependency_injector import containers, providers
from fastapi import FastAPI

from zexec.apps.auth_wiring import build_authenticator
from zexec.apps.deploy_api.app import create_app
from zexec.apps.deploy_api.metrics import DeployMetrics
from zexec.core.errors import ConfigurationError
from zexec.core.ports import Authenticator, Orchestrator, ServerRegistry
from zexec.settings import AuthSettings, BrokerSettings, DeploySettings, HttpSettings


def memory_orchestrator() -> Orchestrator:
    """Provisions nothing; servers show ``ready`` at once (demos, API tests)."""
    from zexec.adapters.orchestrator_memory import InMemoryOrchestrator

    return InMemoryOrchestrator(initial_phase="ready")


def _server_secret(broker: BrokerSettings) -> bytes:
    secret = broker.server_secret.get_secret_value()
    if not secret:
        raise ConfigurationError(
            "ZEXEC_BROKER_SERVER_SECRET is required by the Deploy API too: it derives each "
            "server's broker credential from it (use the broker's value)"
        )
    return secret.encode()


def local_orchestrator(settings: DeploySettings, broker: BrokerSettings) -> Orchestrator:
    """Server processes on this machine, reaching the broker's backend port."""
    from zexec.adapters.orchestrator_local import LocalOrchestrator
    from zexec.adapters.orchestrator_local.isolation import resolve
    from zexec.adapters.orchestrator_local.tenancy import paths_to_reach
    from zexec.adapters.orchestrator_local.uids import UidMap

    state = Path(settings.state_dir).expanduser().resolve()
    users = Path(settings.users_dir).expanduser().resolve() if settings.users_dir else None
    isolation = resolve(settings.isolation, single_trust_domain=settings.single_trust_domain,
                        reach=paths_to_reach(state, *(users,) if users else ()))
    uids = UidMap(state / "uids.json", settings.uid_range, settings.uid_map) \
        if isolation.uid else None
    return LocalOrchestrator(
        state,
        f"tcp://{broker.host}:{broker.backend_port}",
        _server_secret(broker),
        idle_timeout=settings.idle_timeout,
        server_workers=settings.server_workers,
        isolation=isolation,
        uids=uids,
        users_dir=users,
    )


def broker_registry(broker: BrokerSettings) -> ServerRegistry | None:
    """The broker's control port as a :class:`ServerRegistry` (servers' readiness as the
    broker sees it), or None without an admin token (the pods' Ready condition alone)."""
    admin = broker.admin_token.get_secret_value()
    if not admin:
        return None
    from zexec.adapters.transport_zmq.control_client import BrokerControlClient

    return BrokerControlClient(broker.host, broker.control_port, admin)


def kubernetes_orchestrator(settings: DeploySettings, broker: BrokerSettings) -> Orchestrator:
    """Per-user namespaces on the cluster (``ZEXEC_K8S_*``): in-cluster service-account
    credentials when running in a pod, else the local kubeconfig."""
    from kubernetes import client, config

    from zexec.adapters.orchestrator_k8s import KubernetesOrchestrator
    from zexec.adapters.orchestrator_k8s.quota import check_bounds
    from zexec.apps.deploy_api.service import resource_limits
    from zexec.settings import KubernetesSettings

    k8s = KubernetesSettings()
    check_bounds(k8s, resource_limits(settings))  # before touching the cluster

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise ConfigurationError(
                "ZEXEC_DEPLOY_ORCHESTRATOR=kubernetes but no cluster credentials were found "
                f"(not in a pod, and no usable kubeconfig: {exc})"
            ) from exc
    orch = KubernetesOrchestrator(
        client.ApiClient(),
        k8s,
        _server_secret(broker),
        idle_timeout=settings.idle_timeout,
        registry=broker_registry(broker),
    )
    orch.start_reaper()  # stopped by the app's lifespan (close, in _closers)
    return orch


def _closers(orchestrator: Any) -> list[Any]:
    close = getattr(orchestrator, "close", None)
    return [close] if callable(close) else []


class DeployContainer(containers.DeclarativeContainer):
    """``settings``/``auth_settings``/``broker_settings`` are given; ``app`` is the product."""

    settings = providers.Dependency(instance_of=DeploySettings)
    auth_settings = providers.Dependency(instance_of=AuthSettings)
    broker_settings = providers.Dependency(instance_of=BrokerSettings)
    http_settings = providers.Singleton(HttpSettings)
    orchestrator_name = providers.Callable(lambda s: s.orchestrator, settings)

    orchestrator = providers.Selector(
        orchestrator_name,
        memory=providers.Singleton(memory_orchestrator),
        local=providers.Singleton(local_orchestrator, settings, broker_settings),
        kubernetes=providers.Singleton(kubernetes_orchestrator, settings, broker_settings),
    )
    authenticator = providers.Singleton(build_authenticator, auth_settings)
    metrics = providers.Singleton(DeployMetrics, orchestrator)
    app = providers.Singleton(
        create_app,
        settings,
        orchestrator,
        authenticator,
        metrics=metrics,
        closers=providers.Callable(_closers, orchestrator),
        max_body_size=providers.Callable(lambda s: s.max_body_bytes, http_settings),
    )


def build_app_from_settings(
    settings: DeploySettings | None = None,
    auth_settings: AuthSettings | None = None,
    broker_settings: BrokerSettings | None = None,
    *,
    orchestrator: Orchestrator | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    """The Deploy API the settings (default: the environment) describe.

    ``orchestrator`` / ``authenticator`` override what the settings would select.
    """
    container = DeployContainer(
        settings=settings if settings is not None else DeploySettings(),
        auth_settings=auth_settings if auth_settings is not None else AuthSettings(),
        broker_settings=broker_settings if broker_settings is not None else BrokerSettings(),
    )
    if orchestrator is not None:
        container.orchestrator.override(providers.Object(orchestrator))
    if authenticator is not None:
        container.authenticator.override(providers.Object(authenticator))
    return container.app()
