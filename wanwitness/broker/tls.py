"""A certificate authority of this installation and the broker's certificate, for MQTT over TLS.

`wanwitness broker tls init` writes four files into one directory:

- `ca.crt`, `ca.key`: the CA. Every board gets `ca.crt` in its config.json and trusts
  only what this CA signed, so a device on the LAN cannot pose as the broker.
- `server.crt`, `server.key`: the broker's certificate (embedded broker or Mosquitto),
  signed by the CA, naming the host names and addresses the boards connect to.

Keys are ECDSA P-256: small certificates in the boards' config and a handshake that
mbedTLS on an ESP32 supports. Key files are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from wanwitness.errors import UserError

if TYPE_CHECKING:  # imported where used: `cryptography` loads in ~0.1 s
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.x509 import Certificate

    from wanwitness.config import BrokerSection

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.crt", "server.key"
DEFAULT_TLS_PORT = 8883  # IANA "secure-mqtt"
CA_DAYS = 20 * 365
SERVER_DAYS = 10 * 365  # a local CA, not a browser's: long-lived, renewed with --force

# RFC 1123 host name labels; a trailing dot is not accepted (boards do not send one).
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


@dataclass(frozen=True)
class TlsFiles:
    """The paths of the four files in a `broker tls init` directory."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.directory / CA_KEY

    @property
    def cert(self) -> Path:
        return self.directory / SERVER_CERT

    @property
    def key(self) -> Path:
        return self.directory / SERVER_KEY

    def all(self) -> list[Path]:
        return [self.ca_cert, self.ca_key, self.cert, self.key]


def default_directory(config_path: Path) -> Path:
    """Where `broker tls init` writes and the collector looks: tls/ beside the config file."""
    return Path(config_path).parent / "tls"


def default_hosts() -> list[str]:
    """The names every server certificate carries: this machine's names and loopback."""
    names = [socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1", "::1"]
    return _dedupe(n for n in names if n)


def check_host(text: str) -> str:
    """A host name or IP address for a certificate; UserError naming it if neither."""
    host = text.strip()
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    if not host or len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        raise UserError(f"--host {text!r}: not a host name or an IP address")
    return host.lower()


def init_tls(directory: Path, hosts: Iterable[str] = (), *, force: bool = False,
             new_ca: bool = False) -> tuple[TlsFiles, bool]:
    """Make the CA (unless one is kept) and a server certificate for `hosts` plus
    `default_hosts()`. Existing files are an error unless `force`; with `force` an
    existing CA is kept (boards keep trusting the new server certificate) unless `new_ca`.
    Returns the files and whether the CA was kept."""
    files = TlsFiles(Path(directory).absolute())
    names = _dedupe([*default_hosts(), *(check_host(h) for h in hosts)])
    existing = [p for p in files.all() if p.exists()]
    if existing and not force:
        raise UserError(f"{files.directory} already has {', '.join(p.name for p in existing)}: "
                        "pass --force for a new server certificate (the CA is kept, boards need "
                        "no change), or --force --new-ca to replace everything")
    keep_ca = force and not new_ca and files.ca_cert.exists() and files.ca_key.exists()
    try:
        files.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if keep_ca:
            ca_cert, ca_key = _load_ca(files)
        else:
            ca_cert, ca_key = make_ca()
            _write(files.ca_key, _key_pem(ca_key), 0o600)
            _write(files.ca_cert, _cert_pem(ca_cert), 0o644)
        cert, key = issue_server_cert(ca_cert, ca_key, names)
        _write(files.key, _key_pem(key), 0o600)
        _write(files.cert, _cert_pem(cert), 0o644)
    except OSError as exc:
        raise UserError(f"cannot write the TLS files in {files.directory}: "
                        f"{exc.strerror or exc}") from None
    return files, keep_ca


# --- certificates -----------------------------------------------------------------------

def make_ca(name: str = "wanwitness local CA") -> tuple[Certificate, EllipticCurvePrivateKey]:
    """A new self-signed CA: (certificate, private key), cryptography objects."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} ({socket.gethostname()})")])
    start = _now() - datetime.timedelta(days=1)  # a board whose clock is a little behind
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=CA_DAYS))
        # It signs server certificates only, never another CA (RFC 5280 4.2.1.9).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_server_cert(ca_cert: Certificate, ca_key: EllipticCurvePrivateKey, hosts: Iterable[str]) -> tuple[Certificate, EllipticCurvePrivateKey]:
    """A server certificate signed by the CA for exactly `hosts` (names and IPs)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names = list(hosts)
    if not names:
        raise UserError("a server certificate needs at least one host name or address")
    san: list[x509.GeneralName] = []
    for host in names:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            san.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    start = _now() - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        # Clients match the subjectAltName (RFC 6125); the CN is for people reading it.
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def write_server_cert(files: TlsFiles, out_dir: Path, hosts: Iterable[str]) -> TlsFiles:
    """Another server certificate from the CA in `files`, for exactly `hosts`, written into
    out_dir (with a copy of the CA certificate): for a broker that boards reach by a name
    the first certificate does not carry."""
    ca_cert, ca_key = _load_ca(files)
    cert, key = issue_server_cert(ca_cert, ca_key, hosts)
    out = TlsFiles(Path(out_dir).absolute())
    out.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(out.ca_cert, _cert_pem(ca_cert), 0o644)
    _write(out.key, _key_pem(key), 0o600)
    _write(out.cert, _cert_pem(cert), 0o644)
    return out


def san_names(cert_path: Path) -> list[str]:
    """The host names and addresses a certificate file is valid for."""
    from cryptography import x509
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + \
           [str(v) for v in san.get_values_for_type(x509.IPAddress)]


def read_ca_pem(path: Path, what: str) -> str:
    """The text of one PEM CA certificate, checked; UserError naming `what` if not."""
    from cryptography import x509
    try:
        text = Path(path).read_text(encoding="ascii")
    except OSError as exc:
        raise UserError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what}: {path} is not a PEM certificate") from None
    blocks: list[str] = re.findall(r"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----",
                                   text, re.S)
    if len(blocks) != 1:
        raise UserError(f"{what}: {path} must hold exactly one PEM certificate, "
                        f"found {len(blocks)}")
    try:
        cert = x509.load_pem_x509_certificate(blocks[0].encode("ascii"))
    except ValueError as exc:
        raise UserError(f"{what}: {path} is not a valid certificate ({exc})") from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise UserError(f"{what}: {path} is not a CA certificate (give the CA's ca.crt, "
                        "not the server's certificate)")
    return blocks[0] + "\n"


def check_server_files(cert: Path, key: Path, what: str) -> None:
    """The certificate and key load as a pair (as the broker will load them); UserError if not."""
    for path in (cert, key):
        if not Path(path).is_file():
            raise UserError(f"{what}: {path} does not exist (make it with `wanwitness broker tls init`)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except PermissionError as exc:
        raise UserError(f"{what}: cannot read {exc.filename or key}: permission denied") from None
    except (ssl.SSLError, OSError) as exc:
        raise UserError(f"{what}: {cert} and {key} are not a matching PEM certificate and key "
                        f"({getattr(exc, 'reason', None) or exc})") from None


# --- helpers ------------------------------------------------------------------------------

def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _load_ca(files: TlsFiles) -> tuple[Certificate, EllipticCurvePrivateKey]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except OSError as exc:
        raise UserError(f"cannot read {exc.filename}: {exc.strerror or exc}") from None
    except (ValueError, TypeError):
        raise UserError(f"{files.directory}: {CA_CERT} or {CA_KEY} is not readable as a PEM "
                        "certificate and key; use --new-ca to make a new CA") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserError(f"{files.ca_key}: not an ECDSA key; use --new-ca to make a new CA")
    return cert, key


def _cert_pem(cert: Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    # Beside and rename, so a broker never reads half a file; the mode is set before
    # any secret is written (O_CREAT's mode is masked by the umask).
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# --- what the collector's configuration says ---------------------------------------------

def configured_server(broker: BrokerSection, config_path: Path) -> tuple[Path, Path] | None:
    """(certificate, key) for the broker's TLS listener: [broker] tls_cert and tls_key, else
    `broker tls init`'s files beside the config file if they exist; None: no TLS."""
    if broker.tls_cert or broker.tls_key:
        if not (broker.tls_cert and broker.tls_key):
            raise UserError("[broker] tls_cert and tls_key go together: set both, or neither "
                            "(then the files of `wanwitness broker tls init` are used)")
        return Path(broker.tls_cert).expanduser(), Path(broker.tls_key).expanduser()
    files = TlsFiles(default_directory(config_path))
    if files.cert.exists() != files.key.exists():
        missing = files.key if files.cert.exists() else files.cert
        raise UserError(f"{missing} is missing (its pair is there): run `wanwitness broker tls "
                        "init --force` for a new server certificate")
    return (files.cert, files.key) if files.cert.exists() else None


def configured_ca(broker: BrokerSection, config_path: Path) -> Path | None:
    """The CA certificate boards get: [broker] tls_ca, else `broker tls init`'s ca.crt."""
    if broker.tls_ca:
        return Path(broker.tls_ca).expanduser()
    ca = TlsFiles(default_directory(config_path)).ca_cert
    return ca if ca.exists() else None
