"""TLS for the local Kafka: a self-signed certificate for 127.0.0.1, made once by the JDK's keytool.

Under ``<home>/kafka/tls``: ``broker.p12`` (the brokers' key and certificate, PKCS12), its
password (``password``, owner only) and ``broker.pem``, the certificate alone: the brokers'
truststore (they talk TLS among themselves) and the clients' ``ssl.ca.location``. Made at the
first start that asks for TLS and kept, so clients configured once keep working across restarts;
``streamml down --wipe`` removes it with the rest of the data.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from services.core.errors import StackError

TLS_DIR = "tls"
KEYSTORE = "broker.p12"
CERTIFICATE = "broker.pem"
PASSWORD_FILE = "password"  # noqa: S105 -- a file name
ALIAS = "streamml-broker"
VALIDITY_DAYS = 3650
KEYTOOL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Tls:
    """The brokers' listener speaks TLS with this key and certificate."""

    keystore: Path
    certificate: Path
    password: str = field(repr=False)


def certificate_path(kafka_dir: Path) -> Path:
    """Where the clients of a local Kafka find the certificate to trust."""
    return kafka_dir / TLS_DIR / CERTIFICATE


def ensure_certificate(kafka_dir: Path, java: str) -> Tls:
    """The local cluster's TLS material, made with the keytool beside ``java`` if missing."""
    directory = kafka_dir / TLS_DIR
    keystore, certificate = directory / KEYSTORE, directory / CERTIFICATE
    password_file = directory / PASSWORD_FILE
    if keystore.exists() and certificate.exists() and password_file.exists():
        return Tls(keystore, certificate, password_file.read_text().strip())
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for stale in (keystore, certificate):
        stale.unlink(missing_ok=True)
    password = secrets.token_urlsafe(24)
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n")
    keytool = str(Path(java).resolve().with_name("keytool"))  # beside the real java
    store = ["-keystore", str(keystore), "-storetype", "PKCS12", "-storepass", password]
    _run(
        [
            keytool, "-genkeypair", "-alias", ALIAS, "-keyalg", "RSA", "-keysize", "2048",
            "-validity", str(VALIDITY_DAYS), "-dname", "CN=localhost",
            "-ext", "SAN=dns:localhost,ip:127.0.0.1", "-keypass", password, *store,
        ]
    )  # fmt: skip
    _run([keytool, "-exportcert", "-rfc", "-alias", ALIAS, "-file", str(certificate), *store])
    return Tls(keystore, certificate, password)


def _run(argv: list[str]) -> None:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=KEYTOOL_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise StackError(f"TLS for the local Kafka needs the JDK's keytool: {exc}") from exc
    if done.returncode != 0:
        command = " ".join(a for a in argv[:2])
        raise StackError(f"{command} failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
