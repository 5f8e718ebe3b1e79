"""Composition root of the broker: settings -> authenticator -> router -> gateway loop."""

from __future__ import annotations

import logging
import sys

from zexec.adapters.transport_zmtp.broker_loop import BrokerLoop
from zexec.adapters.transport_zmtp.gateway import Limits
from zexec.apps.runtime import configure_logging, raise_open_files_limit
from zexec.core.broker.router import Router
from zexec.core.errors import ConfigurationError
from zexec.core.ports import Authenticator
from zexec.core.tokencache import TokenCache
from zexec.settings import AuthSettings, BrokerSettings

log = logging.getLogger("zexec.broker")


def limits_from(settings: BrokerSettings) -> Limits:
    """The gateway's limits from the broker's settings."""
    return Limits(
        preauth_bytes=settings.preauth_bytes,
        preauth_total_bytes=settings.preauth_total_bytes,
        preauth_timeout=settings.preauth_timeout,
        max_frame_bytes=settings.max_frame_bytes,
        max_frames=settings.max_frames,
        max_payload_bytes=settings.max_payload_bytes,
        max_output_bytes=settings.max_output_bytes,
        idle_timeout=settings.idle_timeout,
        write_timeout=settings.write_timeout,
    )


def build_broker(settings: BrokerSettings, auth: AuthSettings,
                 authenticator: Authenticator | None = None) -> BrokerLoop:
    """Build a broker (ports bound, not yet routing). ``authenticator`` overrides the
    one the auth settings select (tests pass a fake)."""
    secret = settings.server_secret.get_secret_value()
    if not secret:
        raise ConfigurationError(
            "ZEXEC_BROKER_SERVER_SECRET is required: servers prove who they serve with "
            "credentials derived from it"
        )
    tls = None
    if settings.tls_cert_file or settings.tls_key_file:
        if not (settings.tls_cert_file and settings.tls_key_file):
            raise ConfigurationError("the encrypted port needs both ZEXEC_BROKER_TLS_CERT_FILE "
                                     "and ZEXEC_BROKER_TLS_KEY_FILE")
        from zexec.adapters.transport_zmtp.tls import server_context

        try:
            tls = server_context(settings.tls_cert_file, settings.tls_key_file)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot load the broker's TLS certificate and key "
                                     f"({settings.tls_cert_file}, {settings.tls_key_file}): "
                                     f"{exc}") from None
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
        limits=limits_from(settings), tls=tls, secure_port=settings.secure_port,
        failed_tokens_per_conn=settings.failed_tokens_per_conn,
        checks_per_address=settings.auth_checks_per_address,
    )


#: How long a thread may hold the GIL while another waits for it (Python's default is
#: 5 ms). The loop shares the GIL with the token-check threads: under a flood of
#: unknown tokens each slice of theirs is a stall of everyone's messages, so slices are
#: kept short (bench/attack.py's token row shows the effect).
SWITCH_INTERVAL = 0.0005


def main(settings: BrokerSettings | None = None, auth: AuthSettings | None = None) -> int:
    sys.setswitchinterval(SWITCH_INTERVAL)
    configure_logging()
    raise_open_files_limit(log)
    broker = build_broker(settings or BrokerSettings(), auth or AuthSettings())
    broker.install_signal_handlers()
    broker.run()
    return 0
