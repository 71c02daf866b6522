"""TLS: the server speaks HTTPS with the given certificate, and no plain HTTP on that port."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from microseg.api.server import tls_options
from microseg.errors import ConfigError
from microseg.workspace import Workspace


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tls_options_validate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    assert tls_options(None, None) == {}
    assert tls_options(cert, key) == {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    with pytest.raises(ConfigError, match="both"):
        tls_options(cert, None)
    with pytest.raises(ConfigError, match="not found"):
        tls_options(tmp_path / "nope.pem", key)
    with pytest.raises(ConfigError, match="unusable"):
        tls_options(key, cert)  # swapped


def test_server_serves_https_only(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    Workspace.init(root, "tls").close()
    cert, key = self_signed(tmp_path)
    port = free_port()
    code = (
        "from microseg.api.server import serve; from microseg.api.settings import ApiSettings;"
        f"serve({str(root)!r}, port={port}, settings=ApiSettings(dev=True), log_level='warning',"
        f" tls_cert={str(cert)!r}, tls_key={str(key)!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    try:
        url = f"https://127.0.0.1:{port}/v1/health"
        trust = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 40
        response = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = httpx.get(url, verify=trust, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert response is not None, proc.stderr.read().decode() if proc.stderr else ""
        assert response.status_code == 200 and response.json()["status"] in {"ok", "degraded"}
        # without trusting the certificate the client refuses the connection
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url, timeout=5)
        # plain HTTP on the same port gets no HTTP response
        with pytest.raises(httpx.HTTPError):
            r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
            pytest.fail(f"plain HTTP answered {r.status_code}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
