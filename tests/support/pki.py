"""A test PKI made with `cryptography`: a CA, server and client certificates, and the bad ones."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


DEVICES = ("cam-1", "cam-2", "backend")


@dataclass(frozen=True)
class Pki:
    """PEM paths. ``server_*`` is valid for 127.0.0.1 and localhost; ``wrong_host_*`` only for broker.example.com."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    wrong_host_cert: Path
    wrong_host_key: Path
    foreign_ca_cert: Path
    folder: Path

    def client(self, name: str) -> tuple[Path, Path]:
        """(cert, key) of a client: a device id from ``make_pki(devices=)`` (CN = the id), or
        'expired' (CN cam-1, expired yesterday) or 'foreign' (CN cam-1, signed by the foreign CA)."""
        cert, key = self.folder / f"client-{name}.pem", self.folder / f"client-{name}.key"
        if not cert.exists():
            raise ValueError(f"no client certificate {name!r} in {self.folder}")
        return cert, key

    def paho_tls(self, name: str | None = None, *, ca: Path | None = None) -> dict:
        """Keyword arguments for paho's ``tls_set``: trust ``ca`` (default: our CA), present ``name``'s certificate."""
        kwargs = {"ca_certs": str(ca or self.ca_cert)}
        if name is not None:
            cert, key = self.client(name)
            kwargs.update(certfile=str(cert), keyfile=str(key))
        return kwargs

    def serving_wrong_host(self) -> Pki:
        """The same PKI with the broker presenting the certificate made for another host name."""
        return dataclasses.replace(self, server_cert=self.wrong_host_cert, server_key=self.wrong_host_key)


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write(folder: Path, name: str, cert, key) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(key_path, 0o600)  # O_CREAT's mode does not apply to a file that already existed
    return cert_path, key_path


def _ca(common_name: str):
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca_cert, ca_key, common_name: str, *, server: bool, hosts=(), expired: bool = False):
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = (now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)) if expired else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
    builder = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if hosts:
        names = [x509.IPAddress(ipaddress.ip_address(h)) if h[0].isdigit() else x509.DNSName(h) for h in hosts]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(folder: Path, *, devices: tuple[str, ...] = DEVICES) -> Pki:
    """A CA, a server certificate, one client certificate per device (CN = device id), and the bad ones."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _ca("edge-sdk test CA")
    foreign_cert, foreign_key = _ca("someone else's CA")
    _write(folder, "ca", ca_cert, ca_key)
    _write(folder, "foreign-ca", foreign_cert, foreign_key)
    server = _write(folder, "server", *_leaf(ca_cert, ca_key, "127.0.0.1", server=True, hosts=("127.0.0.1", "localhost")))
    wrong = _write(folder, "wrong-host", *_leaf(ca_cert, ca_key, "broker.example.com", server=True, hosts=("broker.example.com",)))
    for name in devices:
        _write(folder, f"client-{name}", *_leaf(ca_cert, ca_key, name, server=False))
    _write(folder, "client-expired", *_leaf(ca_cert, ca_key, "cam-1", server=False, expired=True))
    _write(folder, "client-foreign", *_leaf(foreign_cert, foreign_key, "cam-1", server=False))
    return Pki(folder / "ca.pem", *server, *wrong, folder / "foreign-ca.pem", folder)
