"""How private a connection to the broker is: a leaf both the connection and its
notebook display use."""

from __future__ import annotations


def privacy(broker: str, encrypted: bool) -> str:
    """How private a connection to ``broker`` is: ``encrypted`` (TLS), ``loopback``
    (plain, but on this machine's loopback: see :func:`zexec.apps.client.connect.broker_address`) or ``plain``."""
    from urllib.parse import urlsplit  # here, not at the top: ``import zexec`` stays light

    if encrypted:
        return "encrypted"
    return "loopback" if is_loopback(urlsplit(broker).hostname or "") else "plain"


def is_loopback(host: str) -> bool:
    """``host`` is this machine's loopback (``localhost``, 127.0.0.0/8, ``::1``)."""
    import ipaddress

    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
