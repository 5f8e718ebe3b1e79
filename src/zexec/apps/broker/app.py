"""Composition root of the broker: settings -> authenticator -> router -> socket loop."""

from __future__ import annotations

from zexec.adapters.transport_zmq.broker_loop import BrokerLoop
from zexec.apps.broker.router import Router
from zexec.apps.runtime import configure_logging
from zexec.core.errors import ConfigurationError
from zexec.core.ports import Authenticator
from zexec.core.tokencache import TokenCache
from zexec.settings import AuthSettings, BrokerSettings


def build_broker(settings: BrokerSettings, auth: AuthSettings,
                 authenticator: Authenticator | None = None) -> BrokerLoop:
    """Build a broker (sockets bound, not yet routing). ``authenticator`` overrides the
    one the auth settings select (tests pass a fake)."""
    secret = settings.server_secret.get_secret_value()
    if not secret:
        raise ConfigurationError(
            "ZEXEC_BROKER_SERVER_SECRET is required: servers prove who they serve with "
            "credentials derived from it"
        )
    if authenticator is None:
        from zexec.apps.auth_wiring import build_authenticator

        # The broker caches outcomes itself (never blocking), so it takes the raw one.
        authenticator = build_authenticator(auth, cached=False)
    router = Router(
        secret.encode(),
        TokenCache(positive_ttl=auth.positive_ttl, negative_ttl=auth.negative_ttl),
        server_ttl=settings.server_ttl,
        max_parked=settings.max_parked,
        max_queued_bytes=settings.max_queued_bytes,
        max_checks_per_peer=settings.auth_checks_per_peer,
    )
    return BrokerLoop(
        router, authenticator, host=settings.host,
        ports=(settings.frontend_port, settings.backend_port, settings.control_port),
        admin_token=settings.admin_token.get_secret_value(),
        auth_threads=settings.auth_threads, drain_timeout=settings.drain_timeout,
        max_frame_bytes=settings.max_frame_bytes,
        curve_secret_key=settings.curve_secret_key.get_secret_value().encode(),
        secure_port=settings.secure_port,
    )


def main(settings: BrokerSettings | None = None, auth: AuthSettings | None = None) -> int:
    configure_logging()
    broker = build_broker(settings or BrokerSettings(), auth or AuthSettings())
    broker.install_signal_handlers()
    broker.run()
    return 0
