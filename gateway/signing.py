"""What the two message-signature formats share: the signer's key, what a verified signature
says, and the replay cache.

The hub signs and verifies messages in two formats: WS-Security on SOAP (``gateway.wssec``) and a
detached JWS over the exact body bytes on REST (``gateway.jws``). Both sign with an X.509
application certificate (the one a party also uses for mutual TLS, as Belgian government services
do) and carry that certificate inside the signature, so that the evidence log keeps everything an
auditor needs to check, offline, who signed what.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.errors import ConfigurationError, SignatureError

__all__ = [
    "MIN_RSA_BITS",
    "ReplayCache",
    "SigningKey",
    "VerifiedSignature",
    "der_chain",
]


# The weakest RSA key that signs a message, in either format (NIST SP 800-57: 112-bit security).
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class SigningKey:
    """A private key and its certificate chain (leaf first; intermediates, never the root)."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if not self.chain:
            raise ConfigurationError("a signing key needs its certificate")
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        ours = self.key.public_key().public_bytes(serialization.Encoding.DER, spki)
        if self.chain[0].public_key().public_bytes(serialization.Encoding.DER, spki) != ours:
            raise ConfigurationError("the signing key is not the key of its certificate")

    @property
    def certificate(self) -> x509.Certificate:
        return self.chain[0]

    @classmethod
    def from_files(cls, cert: Path, key: Path) -> SigningKey:
        """Load a PEM certificate file (leaf first, then any intermediates) and its PEM key."""
        try:
            chain = tuple(x509.load_pem_x509_certificates(cert.read_bytes()))
            loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot load the signing key {key}: {exc}") from exc
        if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigurationError(f"{key}: only RSA and EC keys sign messages")
        return cls(loaded, chain)


@dataclass(frozen=True)
class VerifiedSignature:
    """A message signature that verified over the bytes that flow on.

    ``certificate`` is the signer's leaf and ``chain`` what the signature carried beside it
    (intermediates); neither is trusted yet: the caller validates the chain and maps the leaf to
    a party (``gateway.trust``). ``evidence`` is what the evidence log keeps: the format, the
    signature as received (for JWS the compact detached form; for WS-Security the
    SignatureValue, SignedInfo and token), the algorithm and the signing time — enough for an
    auditor to check it again against the kept body.
    """

    format: str  # "wsse" | "jws"
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    signed_at: datetime
    expires_at: datetime
    # A stable digest of the signature value: the key of the replay cache.
    fingerprint: str
    evidence: Mapping[str, Any] = field(default_factory=dict)


class ReplayCache:
    """Signatures seen within their validity window, refused a second time.

    Per process: behind several replicas a replay may reach another replica within the window;
    there the message id makes it a duplicate (never a second acceptance), see docs/security.md.
    Bounded: the oldest entries go first when ``max_entries`` is reached.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self._seen: dict[str, float] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def check_and_add(self, verified: VerifiedSignature, *, now: float | None = None) -> None:
        """Raise ``signature.replayed`` if this signature was seen and has not expired."""
        now = time.time() if now is None else now
        expires = verified.expires_at.timestamp()
        with self._lock:
            seen = self._seen.get(verified.fingerprint)
            if seen is not None and seen > now:
                raise SignatureError(
                    "this signature was already received (a replay); sign each sending anew",
                    code="signature.replayed",
                )
            if len(self._seen) >= self._max:
                self._expire(now)
                while len(self._seen) >= self._max:
                    self._seen.pop(next(iter(self._seen)))
            self._seen[verified.fingerprint] = expires

    def _expire(self, now: float) -> None:
        for key in [k for k, expires in self._seen.items() if expires <= now]:
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)


def der_chain(chain: Sequence[x509.Certificate]) -> list[bytes]:
    """The DER bytes of each certificate of a chain, in order."""
    return [c.public_bytes(serialization.Encoding.DER) for c in chain]
