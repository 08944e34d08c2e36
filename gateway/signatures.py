"""Message signatures at the hub's edge: who signed an inbound message, beyond doubt.

Mutual TLS says which party is on the connection; the message signature says who vouches for the
message itself, and survives into the evidence log (non-repudiation of origin). For every
inbound message :class:`SignatureVerifier`:

1. verifies the signature over exactly what flows on — the body bytes for REST (detached JWS,
   ``gateway.jws``), the Body, Timestamp and token for SOAP (WS-Security, ``gateway.wssec``,
   which hands back only the verified Body's element);
2. validates the signer's certificate (chain to a configured CA, validity now, not revoked:
   ``gateway.trust``);
3. checks that the certificate belongs to the party on the connection (``cert.wrong-party``
   otherwise: one party may not sign for another, nor send what another signed);
4. refuses a signature already seen within its validity window (``signature.replayed``).

``require_signatures = false`` (a migration aid) lets an unsigned message through, recorded as
unsigned; a signature that is present is always checked.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from lxml import etree

from gateway import jws, wssec
from gateway.certs import Identity
from gateway.config import PartyRegistry, Settings
from gateway.errors import CertificateError, GatewayError, SignatureError
from gateway.signing import ReplayCache, SigningKey, VerifiedSignature
from gateway.trust import Owners, TrustStore
from gateway.xml import SoapVersion, soap_payload

__all__ = [
    "UNDERSTOOD_HEADERS",
    "SignatureVerifier",
    "SignatureWindow",
    "SigningAuth",
    "has_security_header",
]

WSSE_NS = wssec.WSSE_NS
# The one header entry the hub understands (SOAP mustUnderstand): WS-Security's.
UNDERSTOOD_HEADERS = frozenset({f"{{{WSSE_NS}}}Security"})


def _utc_now() -> datetime:
    return datetime.now(UTC)


def has_security_header(envelope: etree._Element) -> bool:
    """Whether a SOAP envelope carries a WS-Security header (signed or not)."""
    return any(
        isinstance(entry.tag, str) and entry.tag == f"{{{WSSE_NS}}}Security"
        for header in envelope
        if isinstance(header.tag, str) and etree.QName(header).localname == "Header"
        for entry in header
    )


@dataclass(frozen=True)
class SignatureWindow:
    """How long a signature is fresh (``signature_max_age_s``) and the clock difference
    tolerated (``signature_skew_s``)."""

    max_age_s: int = 300
    skew_s: int = 60

    @classmethod
    def of(cls, settings: Settings) -> SignatureWindow:
        return cls(settings.signature_max_age_s, settings.signature_skew_s)


class _NoReplays(ReplayCache):
    def check_and_add(self, verified: VerifiedSignature, *, now: float | None = None) -> None:
        return None


class SignatureVerifier:
    """Checks inbound message signatures (see the module's docstring)."""

    def __init__(
        self,
        trust: TrustStore | None,
        parties: PartyRegistry,
        *,
        required: bool = True,
        max_age_s: int = 300,
        skew_s: int = 60,
        replay: ReplayCache | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.trust = trust
        self.parties = parties
        self.owners = Owners(parties)
        self.required = required
        self.max_age_s = max_age_s
        self.skew_s = skew_s
        self.replay = replay if replay is not None else ReplayCache()
        self.clock = clock

    def rest(self, sender: str, body: bytes, header: str | None) -> VerifiedSignature | None:
        """Verify a REST message's detached JWS (the ``X-JWS-Signature`` header's value)."""
        if header is None or not header.strip():
            if self.required:
                raise SignatureError(
                    f"a message must be signed: a detached JWS in the {jws.HEADER} header",
                    code="signature.missing",
                )
            return None
        now = self.clock()
        verified = jws.verify_detached(
            header, body, now=now, max_age_s=self.max_age_s, skew_s=self.skew_s
        )
        self._accept(sender, verified, now)
        return verified

    def soap(
        self, sender: str, envelope: etree._Element, expect: SoapVersion
    ) -> tuple[etree._Element, etree._Element | None, VerifiedSignature | None]:
        """The payload and header of a SOAP envelope whose WS-Security signature verified."""
        # The envelope's shape first (one Body, its version, no header to understand but ours),
        # then the signature, which hands back the element of the Body it verified.
        payload, header = soap_payload(envelope, expect=expect, understood=UNDERSTOOD_HEADERS)
        if not has_security_header(envelope):
            if self.required:
                raise SignatureError(
                    "a message must be signed: a WS-Security header (X.509 token, Timestamp,"
                    " signature over Body, Timestamp and token)",
                    code="signature.missing",
                )
            return payload, header, None
        now = self.clock()
        verified = wssec.verify_envelope(
            envelope, now=now, max_ttl_s=self.max_age_s, skew_s=self.skew_s
        )
        self._accept(sender, verified.signature, now)
        return verified.payload, verified.header, verified.signature

    @classmethod
    def as_of(
        cls,
        parties: PartyRegistry,
        moment: datetime,
        *,
        required: bool,
        window: SignatureWindow | None = None,
    ) -> SignatureVerifier:
        """A verifier for a message received at ``moment`` and checked again later (replay,
        ``guichet validate``): freshness judged at that moment in the hub's ``window``, no replay
        cache, and no chain validation (it was done on receipt; the owner is still checked)."""
        window = window or SignatureWindow()
        return cls(
            None,
            parties,
            required=required,
            max_age_s=window.max_age_s,
            skew_s=window.skew_s,
            clock=lambda: moment,
            replay=_NoReplays(),
        )

    def _accept(self, sender: str, verified: VerifiedSignature, now: datetime) -> None:
        if self.trust is not None:
            self.trust.validate(verified.certificate, verified.chain, at=now)
        signer = self.owners(verified.certificate)
        if signer != Identity("party", sender):
            who = f"{signer.kind} {signer.name}" if signer else "no party"
            raise CertificateError(
                f"the message is signed by a certificate of {who}, not of {sender}",
                code="cert.wrong-party",
            )
        self.replay.check_and_add(verified, now=now.timestamp())


class SigningAuth(httpx.Auth):
    """An httpx auth that signs every message a client POSTs: a back office calling the hub, or
    the hub's side calling a back office.

    A SOAP request (Content-Type ``application/soap+xml``, or a ``SOAPAction`` header, which
    every SOAP 1.1 request carries) gets a WS-Security header; any other POST body a detached
    JWS in ``X-JWS-Signature``. Each sending is signed anew (a fresh Timestamp or ``iat``, new
    ids), so a retry is never taken for a replay::

        httpx.Client(base_url=hub, verify=tls, auth=SigningAuth(SigningKey.from_files(c, k)))
    """

    requires_request_body = True

    def __init__(self, signer: SigningKey, *, soap_path: str = "/soap/") -> None:
        self.signer = signer
        self.soap_path = soap_path  # the hub's SOAP endpoint, whatever the headers say

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if request.method != "POST" or not request.content:
            yield request
            return
        if is_soap_request(request.headers) or request.url.path.startswith(self.soap_path):
            try:
                body = wssec.sign_envelope(request.content, self.signer)
            except (GatewayError, ValueError):
                # No SOAP envelope to carry a signature: sent as it is, for the receiver to
                # refuse for what it is (a test of a broken body, or a broken client).
                yield request
                return
            headers = [(k, v) for k, v in request.headers.multi_items() if k != "content-length"]
            yield httpx.Request(
                request.method,
                request.url,
                headers=headers,
                content=body,
                extensions=request.extensions,
            )
            return
        request.headers[jws.HEADER] = jws.sign_detached(request.content, self.signer)
        yield request


def is_soap_request(headers: Mapping[str, str]) -> bool:
    """Whether an HTTP request carries SOAP: SOAP 1.2's media type, or SOAP 1.1's SOAPAction."""
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == "application/soap+xml" or "soapaction" in {k.lower() for k in headers}
