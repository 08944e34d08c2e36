"""docs/deploy/nginx.conf, run: what reaches the hub behind nginx, and what nginx refuses.

The upstream is a small echo app in plain HTTP on loopback (the hub's place in the example);
nginx in front of it checks client certificates against a development PKI and a CRL.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.types import Receive, Scope, Send

from gateway.certs import PARTY_URN, DevPki, TlsFiles, identity_of, init_dev_pki
from gateway.config import load_parties
from gateway.service.server import ServerThread
from gateway.service.tls import client_ssl_context
from gateway.testing import wait_until
from tests.nginx import NginxProcess, running_nginx

pytestmark = pytest.mark.slow

HOME = Path(__file__).resolve().parents[1]
LIMIT = 2 * 1024 * 1024  # client_max_body_size 2m in the example: the hub's max_body_bytes
# What $ssl_client_escaped_cert may contain: nginx escapes every byte but these as %XX.
_URI_COMPONENT = re.compile(r"[A-Za-z0-9._~%-]+")


@dataclass
class Echo:
    """An ASGI app answering every request with the headers and body size it received."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                event = (await receive())["type"]  # lifespan.startup, then lifespan.shutdown
                await send({"type": event + ".complete"})
                if event == "lifespan.shutdown":
                    return
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        request = {
            "path": scope["path"],
            "client": scope["client"][0],
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_bytes": size,
            "complete": not more,
        }
        self.seen.append(request)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(request).encode()})


@dataclass
class Setup:
    pki: DevPki
    revoked: TlsFiles
    echo: Echo
    proxy: NginxProcess


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("nginx")
    pki = init_dev_pki(tmp / "pki", load_parties(HOME / "parties.toml").identities())
    revoked = _issue(pki, "be-platform", tmp / "revoked")
    crl = _write_crl(pki, [revoked.cert], tmp / "crl.pem")
    echo = Echo()
    with (
        ServerThread(echo) as upstream,
        running_nginx(
            upstream=upstream.url,
            ca=pki.ca_cert,
            cert=pki.hub_cert,
            key=pki.hub_key,
            crl=crl,
            tmp=tmp / "proxy",
        ) as proxy,
    ):
        yield Setup(pki, revoked, echo, proxy)


def _client(setup: Setup, files: TlsFiles | None) -> httpx.Client:
    if files is None:
        context = ssl.create_default_context(cafile=setup.pki.ca_cert)
    else:
        context = client_ssl_context(files)
    return httpx.Client(base_url=setup.proxy.url, verify=context, timeout=10)


def _headers(seen: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in seen["headers"] if k.lower() == name.lower()]


def test_the_callers_certificate_reaches_the_upstream_url_encoded(setup: Setup) -> None:
    party = setup.pki.party("be-platform")
    sent = {
        "BelGov-Trace-Id": "0f7d5b7e-3a4e-4b43-9a31-5d0e0e1c2a11",
        "X-JWS-Signature": "eyJhbGciOiJFUzI1NiIsImI2NCI6ZmFsc2V9..MEUCIQ-_x+y/z=",
        "SOAPAction": '"urn:be:guichet:submit#Application"',
        "X-Forwarded-For": "203.0.113.66",  # the caller's say-so: replaced
    }
    with _client(setup, party) as client:
        response = client.post("/v1/messages", content=b"{}", headers=sent)
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["client"] == "127.0.0.1" and seen["path"] == "/v1/messages"

    [escaped] = _headers(seen, "X-SSL-Client-Cert")
    assert _URI_COMPONENT.fullmatch(escaped), escaped
    assert "%0A" in escaped and "-----BEGIN%20CERTIFICATE-----" in escaped
    pem = unquote(escaped)
    assert pem == party.cert.read_text()
    assert identity_of(x509.load_pem_x509_certificate(pem.encode())) is not None

    for name in ("BelGov-Trace-Id", "X-JWS-Signature", "SOAPAction"):
        assert _headers(seen, name) == [sent[name]], name
    assert _headers(seen, "X-Forwarded-For") == ["127.0.0.1"]
    assert _headers(seen, "X-Forwarded-Proto") == ["https"]


def test_a_forged_certificate_header_is_replaced_by_the_real_one(setup: Setup) -> None:
    party = setup.pki.party("be-vlg-wse")
    forged = [
        ("X-SSL-Client-Cert", "-----BEGIN%20CERTIFICATE-----%0Aforged"),
        ("x-ssl-client-cert", "forged-again"),
        ("X_SSL_Client_Cert", "forged-with-underscores"),
    ]
    with _client(setup, party) as client:
        response = client.get("/", headers=forged)
    assert response.status_code == 200, response.text
    seen = response.json()
    assert [unquote(v) for v in _headers(seen, "X-SSL-Client-Cert")] == [party.cert.read_text()]
    assert not [k for k, _ in seen["headers"] if k.lower().replace("_", "-") != k.lower()]


def test_a_caller_without_a_certificate_is_refused_by_nginx(setup: Setup) -> None:
    before = len(setup.echo.seen)
    with _client(setup, None) as client:
        response = client.get("/", headers={"X-SSL-Client-Cert": "forged"})
    assert response.status_code == 400
    assert "No required SSL certificate was sent" in response.text
    assert len(setup.echo.seen) == before


def test_a_revoked_certificate_is_refused_by_nginx(setup: Setup) -> None:
    before, logged = len(setup.echo.seen), len(setup.proxy.log())
    with _client(setup, setup.revoked) as client:
        response = client.get("/")
    assert response.status_code == 400
    assert "The SSL certificate error" in response.text
    assert "certificate revoked" in setup.proxy.log()[logged:]
    assert len(setup.echo.seen) == before


def test_a_body_of_the_limit_is_streamed_to_the_upstream(setup: Setup) -> None:
    with _client(setup, setup.pki.party("be-platform")) as client:
        response = client.post("/", content=_chunks(LIMIT))
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["body_bytes"] == LIMIT and seen["complete"]
    # Passed on as it came (chunked), not spooled and then sent with a Content-Length.
    assert _headers(seen, "Transfer-Encoding") == ["chunked"]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_a_body_over_the_limit_is_refused_by_nginx(setup: Setup, chunked: bool) -> None:
    path = f"/too-large/{'chunked' if chunked else 'declared'}"
    body = _chunks(LIMIT + 1) if chunked else b"x" * (LIMIT + 1)
    logged = len(setup.proxy.log())
    with _client(setup, setup.pki.party("be-platform")) as client:
        response = client.post(path, content=body)
    assert response.status_code == 413
    expected = "too large chunked body" if chunked else "too large body"
    assert f"client intended to send {expected}" in setup.proxy.log()[logged:]
    if chunked:
        # Streamed: the upstream was called with the headers and got the first ~LIMIT bytes;
        # then nginx dropped the connection without the last chunk, so the upstream sees a
        # disconnect, never a complete body. The hub must not act on the part it read.
        assert wait_until(lambda: [s for s in setup.echo.seen if s["path"] == path], 5)
        [partial] = [s for s in setup.echo.seen if s["path"] == path]
        assert not partial["complete"] and partial["body_bytes"] <= LIMIT
    else:
        assert not [
            s for s in setup.echo.seen if s["path"] == path
        ]  # declared too large: refused before the upstream is called


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes as an iterator: httpx sends it chunked."""
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


def _issue(pki: DevPki, party_id: str, stem: Path) -> TlsFiles:
    """Another certificate of a party, by the development CA: valid in every way but the CRL."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(PARTY_URN + party_id)]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(cert=stem.with_suffix(".pem"), key=stem.with_suffix(".key"), ca=pki.ca_cert)
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _write_crl(pki: DevPki, revoked: list[Path], path: Path) -> Path:
    """A CRL of the development CA revoking these certificates, valid for a day."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - timedelta(minutes=5))
        .next_update(now + timedelta(days=1))
    )
    for cert_path in revoked:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - timedelta(minutes=1))
            .build()
        )
    path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path
