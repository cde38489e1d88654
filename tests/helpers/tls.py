"""Certificates and keys for a secured Flower deployment in tests, written as files.

Flower 1.42 reads the SuperLink's TLS CA certificate, certificate and key as PEM (``--ssl-ca-certfile``,
``--ssl-certfile``, ``--ssl-keyfile``), a SuperNode's authentication private key in OpenSSH format
(``--auth-supernode-private-key``, read with ``load_ssh_private_key``) and the public key that
``flwr supernode register`` adds in OpenSSH format (``load_ssh_public_key``, a NIST EC curve). Every
key here is EC on SECP384R1 (P-384).
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=2)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def _write_pem_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _write_certificate(certificate: x509.Certificate, path: Path) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def write_ca(directory: Path, name: str = "lit-meta test CA") -> tuple[Path, Path]:
    """Write a self-signed certificate authority.

    Args:
        directory: Existing folder for ``ca.crt`` and ``ca.key``.
        name: The CA's common name.

    Returns:
        The paths of the CA certificate (PEM) and of its private key (PEM, PKCS#8, unencrypted).
    """
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    _write_certificate(certificate, cert_path)
    _write_pem_key(key, key_path)
    return cert_path, key_path


def write_server_certificate(
    directory: Path, ca_cert: Path, ca_key: Path, ip: str = "127.0.0.1", name: str = "server"
) -> tuple[Path, Path]:
    """Write a TLS server certificate for ``ip``, signed by the CA of ``write_ca``.

    Args:
        directory: Existing folder for ``<name>.crt`` and ``<name>.key``.
        ca_cert: The CA certificate (PEM).
        ca_key: The CA's private key (PEM).
        ip: The address clients connect to; the certificate names it as an ``IPAddress``
            SubjectAlternativeName (clients verify that, not the common name).
        name: The file names' stem.

    Returns:
        The paths of the server certificate (PEM) and of its private key (PEM, PKCS#8, unencrypted).
    """
    issuer = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    key = _new_key()
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(signer, hashes.SHA384())  # type: ignore[arg-type]
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    _write_certificate(certificate, cert_path)
    _write_pem_key(key, key_path)
    return cert_path, key_path


def write_node_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """Write a SuperNode's authentication key pair.

    Args:
        directory: Existing folder for ``<name>`` and ``<name>.pub``.
        name: The private key's file name.

    Returns:
        The paths of the private key (OpenSSH format, for ``flower-supernode --auth-supernode-private-key``)
        and of the public key (OpenSSH format, for ``flwr supernode register``).
    """
    key = _new_key()
    private_path, public_path = directory / name, directory / f"{name}.pub"
    private_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"
    )
    return private_path, public_path
