"""A throwaway self-signed certificate for the relay ``bench --tls`` starts itself.

Bench measures TLS as a real deployment runs it: the workers verify the relay's
certificate (chain and address) against exactly this certificate, not with
verification turned off. It is made fresh for each run (an ECDSA P-256 key, valid for
a day, for the loopback address the relay listens on) with the ``cryptography``
package, and lives in a temporary directory that bench removes afterwards.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

__all__ = ["self_signed"]

#: how long the throwaway certificate is valid: longer than any run
VALID_FOR = datetime.timedelta(days=1)


def self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` for ``host`` (an IP address or a DNS name)
    into ``directory``; return their paths (certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"chatcli bench {host}")])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        # its own CA: the clients trust it as the one anchor (--ca), as with a private CA
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
