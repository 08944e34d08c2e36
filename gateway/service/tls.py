"""Mutual TLS for the hub: SSL contexts, and the caller's certificate handed to the ASGI app.

uvicorn verifies client certificates but does not pass them on to the application.
``MTLSHttpToolsProtocol`` fills that gap by implementing the ASGI TLS extension
(``scope["extensions"]["tls"]``) on top of uvicorn's httptools protocol; ``client_certificate``
reads it back as a parsed ``x509.Certificate``. See docs/adr/0002-mtls-peer-certificate.md.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.certs import TlsFiles

__all__ = [
    "MTLSHttpToolsProtocol",
    "client_certificate",
    "client_ssl_context",
    "server_ssl_context",
]

# Where the parsed certificate rides along in the extension dict, so the app never re-parses it.
# Private to this module: the ASGI spec defines only the other keys.
_PARSED = "_guichet_cert"

# The ASGI TLS extension gives the version as the TLS wire value.
_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context that refuses any client without a certificate chaining to ``files.ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    context.load_verify_locations(cafile=files.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A client context that checks the server (chain and host name) and presents our cert."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=files.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    return context


class MTLSHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the ASGI TLS extension in every HTTP scope.

    The peer certificate is read and parsed once, when the connection is made (after the TLS
    handshake, so it is already verified against the CA); each request on the keep-alive
    connection gets a shallow copy of that per-connection dict.
    """

    _tls_extension: dict[object, object] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._tls_extension = _tls_extension(ssl_object)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls_extension is not None:
            # A copy so an app (or middleware) editing its scope cannot change the next request's.
            self.scope["extensions"] = {"tls": dict(self._tls_extension)}


def client_certificate(scope: Mapping[str, Any]) -> x509.Certificate | None:
    """The verified certificate the caller presented, from the ASGI TLS extension.

    ``None`` without the extension, without a certificate, or when the server reports that the
    certificate failed verification. The certificate is as trustworthy as the server that filled
    the scope: with ``MTLSHttpToolsProtocol`` and ``server_ssl_context`` the TLS layer has
    validated it against the configured CA before the app sees it.
    """
    tls = (scope.get("extensions") or {}).get("tls")
    if not tls or tls.get("client_cert_error") is not None:
        return None
    parsed = tls.get(_PARSED)
    if isinstance(parsed, x509.Certificate):
        return parsed
    # Another ASGI server filled the extension: parse the leaf, cached across requests.
    leaf = next(iter(tls.get("client_cert_chain") or ()), None)
    return _parse_pem(leaf) if isinstance(leaf, str) else None


@lru_cache(maxsize=256)
def _parse_pem(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode("ascii"))


def _tls_extension(ssl_object: ssl.SSLObject) -> dict[object, object]:
    der = ssl_object.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der) if der else None
    return {
        "server_cert": None,
        # Python's ssl exposes only the peer's leaf before 3.13, so the "chain" is the leaf alone.
        "client_cert_chain": [cert.public_bytes(Encoding.PEM).decode("ascii")] if cert else [],
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        # Python's ssl names the cipher but does not give its 16-bit IANA value the spec asks for.
        "cipher_suite": None,
        "client_cert_name": cert.subject.rfc4514_string() if cert else None,
        # Verification failures end the handshake (CERT_REQUIRED); a connection here passed.
        "client_cert_error": None,
        _PARSED: cert,
    }
