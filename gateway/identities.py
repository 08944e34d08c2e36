"""Who is calling: the caller's certificate, from the TLS connection or from a trusted proxy.

The hub ends TLS itself (mutual TLS, ``gateway.service.tls``), or sits behind a reverse proxy
that ends it and forwards the verified client certificate in a header (URL-encoded PEM, as
nginx's ``$ssl_client_escaped_cert``; docs/deploy/nginx.conf). That header is believed only on a
connection from a configured proxy address; from anywhere else it is refused outright
(``auth.untrusted-proxy``): a caller sending it is trying to be someone else, or a proxy is
misconfigured, and either deserves a loud refusal rather than a silent fallback.

Either way the certificate is then checked by the one trust store (chain to a configured CA,
validity, revocation: ``gateway.trust``) and mapped to a party or a role by the parties config.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import unquote

from cryptography import x509

from gateway.certs import Identity
from gateway.config import PartyRegistry
from gateway.errors import AuthenticationError, CertificateError, ConfigurationError
from gateway.trust import Owners, TrustStore

__all__ = ["Authenticator", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A forwarded certificate is one PEM certificate; a header far larger than that is no certificate.
_MAX_FORWARDED = 16 * 1024


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """Proxy addresses from the configuration: single addresses or networks (CIDR)."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ConfigurationError(f"trusted_proxies: {value!r} is no address: {exc}") from exc
    return tuple(networks)


class Authenticator:
    """Turns what a request carries into an identity, or refuses it."""

    def __init__(
        self,
        trust: TrustStore,
        parties: PartyRegistry,
        *,
        proxies: Sequence[str] = (),
        header: str = "X-SSL-Client-Cert",
        behind_proxy: bool = False,
    ) -> None:
        self.trust = trust
        # Only a hub that does not end TLS itself believes a forwarded certificate: one that does
        # has the caller's own certificate, and a header is then a forgery, wherever it comes from.
        self.behind_proxy = behind_proxy
        self.parties = parties
        self.owners = Owners(parties)
        self.proxies = parse_networks(proxies)
        self.header = header.lower()

    def from_proxy(self, peer: str | None) -> bool:
        if peer is None or not self.proxies:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener's view of an IPv4 proxy
        return any(address in network for network in self.proxies)

    def authenticate(
        self, tls_certificate: x509.Certificate | None, peer: str | None, forwarded: str | None
    ) -> Identity:
        """The identity of a request: its TLS client certificate, or the one a configured proxy
        forwarded (``forwarded``: the header's value, None when absent)."""
        if forwarded is not None:
            if not (self.behind_proxy and self.from_proxy(peer)):
                raise AuthenticationError(
                    f"a forwarded client certificate ({self.header}) is accepted only behind a"
                    " proxy, from a configured proxy address",
                    code="auth.untrusted-proxy",
                )
            certificate = _forwarded_certificate(forwarded)
        else:
            certificate = tls_certificate
        if certificate is None:
            raise AuthenticationError("a client certificate issued by the hub's CA is required")
        self.trust.validate(certificate)
        identity = self.owners(certificate)
        if identity is None:
            raise AuthenticationError(
                "the client certificate names no party or role of this hub",
                code="auth.unknown-party",
            )
        return identity


def _forwarded_certificate(value: str) -> x509.Certificate | None:
    """The certificate of a forwarding header; empty (nginx: no certificate) → None."""
    if not value.strip():
        return None
    if len(value) > _MAX_FORWARDED:
        raise CertificateError("the forwarded certificate is too large", code="cert.malformed")
    try:
        return x509.load_pem_x509_certificate(unquote(value).encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise CertificateError(
            "the forwarded client certificate is not a URL-encoded PEM certificate",
            code="cert.malformed",
        ) from exc
