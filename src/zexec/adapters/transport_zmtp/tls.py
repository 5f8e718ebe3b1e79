"""TLS for the broker's encrypted client port: contexts, certificate pins, and the
self-signed certificate ``zexec up`` makes.

TLS 1.3 only, from the OpenSSL Python links to (standard, reviewed cryptography; no
cipher of our own). A broker's certificate is usually self-signed: clients that learn
its SHA-256 from ``/broker-config`` (over the control plane's HTTPS, or loopback) pin
it; a site may instead give the broker a certificate from a CA its clients trust.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from collections.abc import Sequence
from pathlib import Path


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The broker side: TLS 1.3, this certificate (PEM chain) and key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def client_context(pinned: bool) -> ssl.SSLContext:
    """The SDK side: with a pin, the pin is the whole check (the certificate is compared
    to it byte for byte after the handshake); without, the system's CAs and the host
    name."""
    if pinned:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def certificate_pin(der: bytes) -> str:
    """The pin of a DER certificate: its SHA-256, hex."""
    return hashlib.sha256(der).hexdigest()


def file_pin(path: str | os.PathLike) -> str:
    """The pin of the first certificate in a PEM file."""
    pem = Path(path).read_text()
    start = pem.index("-----BEGIN CERTIFICATE-----")
    end = pem.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
    return certificate_pin(ssl.PEM_cert_to_DER_cert(pem[start:end]))


def make_self_signed(cert_file: Path, key_file: Path, hosts: Sequence[str],
                     days: int = 3650) -> None:
    """Write a new self-signed certificate for ``hosts`` (names or IPs, as subject
    alternative names) and its P-256 key (mode 0600). Needs ``cryptography`` (the
    server side's dependency)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "zexec broker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
