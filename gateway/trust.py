"""Whether a certificate is trusted, and whose it is: the one place that decides both.

:class:`TrustStore` validates a certificate (of a TLS connection, one a proxy forwarded, or one
that signed a message) against the configured CAs and CRLs; :func:`owner` says which party or
role a certificate belongs to, following parties.toml. Every refusal is a
:class:`~gateway.errors.CertificateError` with one of the ``cert.*`` codes:

- ``cert.untrusted``      no path to a configured CA (unknown issuer, bad signature, a CA that
                          may not issue, an unknown critical extension, a CA presented as a leaf,
                          …), or (``refuse_stale_crl``) revocation status unknown;
- ``cert.expired`` / ``cert.not-yet-valid``  a certificate of the path is outside its dates at
                          the time asked (the leaf, an intermediate or the CA);
- ``cert.revoked``        the serial of a certificate of the path is on a CRL of its issuer;
- ``cert.usage``          the leaf's keyUsage is missing or does not allow digitalSignature.

The checks run in that order: an untrusted certificate is reported untrusted whatever its dates.

Decisions:

- Paths are built and checked by ``cryptography.x509.verification`` (RFC 5280 / CA/B webpki
  profile: basicConstraints and pathlen, signature algorithms, RSA ≥ 2048, critical extensions),
  with the leaf policy relaxed to fit application certificates: neither a subjectAltName nor an
  extendedKeyUsage is required (a signing certificate may have neither; the TLS layer checks
  clientAuth itself). When the verifier refuses, a plain walk by issuer name and signature only
  tells *why*: a path that exists but has a certificate outside its dates is expired or not yet
  valid; anything else is untrusted. The walk never accepts anything.
- keyUsage must be present: RFC 5280 reads an absent one as "any use", but every certificate of a
  Belgian application PKI carries one, and one without it is more likely a mistake.
- A CRL is believed for a certificate only if its issuer name is the certificate's issuer and it
  is signed by the key of the certificate that issued it (the next one in the path); any other
  CRL (another CA's, a forged one naming our CA) is ignored for that certificate: it can neither
  revoke nor vouch. Revocation is checked for every certificate of the path but the trust anchor,
  whatever ``at`` is (a revoked key is distrusted for the past as well). Several CRLs of one
  issuer: a serial on any of them is revoked. Delta CRLs, indirect CRLs and distribution-point
  scopes are not supported (a dev CA issues none).
- A CRL past its nextUpdate is still used, and logged (``trust.crl.stale``, once per CRL): its
  revocations stay true, and refusing every certificate because the CA's CRL publishing lapsed
  would lock every party out at once. ``refuse_stale_crl=True`` fails closed instead: a
  certificate whose issuer has CRLs, all stale, is ``cert.untrusted`` (revocation unknown).
  An issuer with no CRL configured at all is not checked for revocation.
- Files (CAs and CRLs) are re-read when their mtime, size or inode change, checked at most every
  ``recheck_s`` seconds from ``validate``. A file that cannot be read or parsed after a change
  keeps what was loaded before and is logged as an error: a broken or vanished CRL never opens
  the gate. At construction every file must load (``ConfigurationError``).
- Successes are cached per (leaf, intermediates, file generation), for as long as ``at`` stays
  inside every date of the path; any change of a file starts a new generation.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from gateway.certs import PARTY_URN, ROLE_URN, DevPki, Identity, guichet_uris, identity_of
from gateway.errors import CertificateError, ConfigurationError

if TYPE_CHECKING:
    from gateway.config import PartyRegistry

__all__ = ["Owners", "TrustStore", "load_certificate", "owner"]

log = structlog.get_logger("guichet.trust")

_CACHE_SIZE = 4096
_MAX_DEPTH = 8
_Stamp = tuple[int, int, int]  # st_mtime_ns, st_size, st_ino
T = TypeVar("T")
# The verifier's messages end with the repr of the certificate at fault: the detail names it.
_ENCOUNTERED = re.compile(r" \(encountered processing <Certificate.*\)$", re.DOTALL)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _leaf_policy() -> ExtensionPolicy:
    # webpki's leaf rules, less two requirements that fit web servers, not our parties: a SAN
    # (mapping may be by subject) and an EKU (signing certificates may carry none).
    return (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
    )


@dataclass(frozen=True)
class _State:
    """What the files held at one generation."""

    generation: int
    anchors: tuple[x509.Certificate, ...]
    store: Store
    crls: tuple[x509.CertificateRevocationList, ...]


@dataclass(frozen=True)
class _Valid:
    """A cached success: good while ``at`` stays inside every date of its path."""

    not_before: datetime
    not_after: datetime


class TrustStore:
    """The CAs and CRLs certificates are checked against; see the module's decisions."""

    def __init__(
        self,
        ca_files: Sequence[Path],
        crl_files: Sequence[Path] = (),
        *,
        clock: Callable[[], datetime] = _utc_now,
        recheck_s: float = 1.0,
        refuse_stale_crl: bool = False,
    ) -> None:
        if not ca_files:
            raise ConfigurationError("a trust store needs at least one CA file")
        self._ca_files = tuple(Path(p) for p in ca_files)
        self._crl_files = tuple(Path(p) for p in crl_files)
        self._clock = clock
        self._recheck_s = recheck_s
        self._refuse_stale_crl = refuse_stale_crl
        self._lock = threading.Lock()
        self._cas: dict[Path, tuple[x509.Certificate, ...]] = {}
        self._crls: dict[Path, x509.CertificateRevocationList] = {}
        self._stamps: dict[Path, _Stamp | None] = {}
        self._failed: dict[Path, _Stamp | None] = {}  # a bad version, logged once
        for path in self._ca_files:
            self._cas[path], self._stamps[path] = self._read(path, _read_cas)
        for path in self._crl_files:
            self._crls[path], self._stamps[path] = self._read(path, _read_crl)
        self._state = self._build(0)
        self._cache: OrderedDict[tuple[bytes, tuple[bytes, ...], int], _Valid] = OrderedDict()
        self._signed: dict[tuple[bytes, bytes], bool] = {}  # (CRL, issuer) fingerprints
        self._stale_logged: set[bytes] = set()
        self._checked_at = time.monotonic()
        self._warn_unsigned_crls()

    @classmethod
    def from_pki(
        cls,
        pki: DevPki,
        *,
        clock: Callable[[], datetime] = _utc_now,
        recheck_s: float = 1.0,
        refuse_stale_crl: bool = False,
    ) -> TrustStore:
        """A development PKI's CA, and its ``crl.pem`` when it has one."""
        return cls(
            [pki.ca_cert],
            pki.crl_files,
            clock=clock,
            recheck_s=recheck_s,
            refuse_stale_crl=refuse_stale_crl,
        )

    @property
    def generation(self) -> int:
        """Bumped on every change of the files loaded (tests, metrics)."""
        return self._state.generation

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return self._state.anchors

    def validate(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate] = (),
        *,
        at: datetime | None = None,
    ) -> x509.Certificate:
        """``leaf`` if it chains to a configured CA (through ``intermediates`` if need be), every
        certificate of its path is within its dates at ``at`` (default: the clock's now) and on
        no CRL of its issuer, and its keyUsage allows digitalSignature; else CertificateError."""
        if time.monotonic() - self._checked_at >= self._recheck_s:
            self.reload_if_changed()
        at = at or self._clock()
        if at.tzinfo is None:  # a naive time is taken as UTC, as cryptography's are
            at = at.replace(tzinfo=UTC)
        state = self._state
        key = (
            leaf.fingerprint(hashes.SHA256()),
            tuple(c.fingerprint(hashes.SHA256()) for c in intermediates),
            state.generation,
        )
        hit = self._cache.get(key)
        if hit is not None and hit.not_before <= at <= hit.not_after:
            return leaf
        path = self._path(state, leaf, intermediates, at)
        self._check_revocation(state, path, at)
        _check_usage(leaf)
        with self._lock:
            self._cache[key] = _Valid(
                max(c.not_valid_before_utc for c in path),
                min(c.not_valid_after_utc for c in path),
            )
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return leaf

    def reload_if_changed(self) -> bool:
        """Re-read each file whose mtime, size or inode changed; True if anything new loaded.
        A file that fails keeps its previous content (logged as an error once per version)."""
        with self._lock:
            self._checked_at = time.monotonic()
            changed = False
            for path in self._ca_files:
                cas = self._reload(path, _read_cas)
                if cas is not None:
                    self._cas[path], changed = cas, True
            for path in self._crl_files:
                crl = self._reload(path, _read_crl)
                if crl is not None:
                    self._crls[path], changed = crl, True
            if changed:
                self._state = self._build(self._state.generation + 1)
                self._cache.clear()
                log.info("trust.reloaded", generation=self._state.generation)
        if changed:
            self._warn_unsigned_crls()
        return changed

    # -- loading ---------------------------------------------------------------------------

    def _read(self, path: Path, parse: Callable[[bytes], T]) -> tuple[T, _Stamp | None]:
        stamp = _stamp(path)
        try:
            return parse(path.read_bytes()), stamp
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"{path}: {exc}") from exc

    def _reload(self, path: Path, parse: Callable[[bytes], T]) -> T | None:
        stamp = _stamp(path)
        if stamp == self._stamps.get(path) or (
            path in self._failed and stamp == self._failed[path]
        ):
            return None
        try:
            loaded = parse(path.read_bytes())
        except (OSError, ValueError) as exc:
            failure = str(exc)
        else:
            self._stamps[path] = stamp
            self._failed.pop(path, None)
            return loaded
        self._failed[path] = stamp
        log.error("trust.file.unreadable", path=str(path), error=failure, kept="previous")
        return None

    def _build(self, generation: int) -> _State:
        unique = {c.fingerprint(hashes.SHA256()): c for cas in self._cas.values() for c in cas}
        anchors = tuple(unique.values())
        return _State(generation, anchors, Store(list(anchors)), tuple(self._crls.values()))

    def _warn_unsigned_crls(self) -> None:
        """Log a CRL that no configured CA signed (it may be an intermediate's, checked then)."""
        state = self._state
        for crl in state.crls:
            if not any(crl.issuer == ca.subject and _signed_by(crl, ca) for ca in state.anchors):
                log.warning("trust.crl.no-configured-issuer", issuer=crl.issuer.rfc4514_string())

    # -- checking --------------------------------------------------------------------------

    def _path(
        self,
        state: _State,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        at: datetime,
    ) -> list[x509.Certificate]:
        verifier = (
            PolicyBuilder()
            .store(state.store)
            .time(at)
            .max_chain_depth(_MAX_DEPTH)
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_leaf_policy()
            )
            .build_client_verifier()
        )
        try:
            return list(verifier.verify(leaf, list(intermediates)).chain)
        except VerificationError as exc:
            refusal = str(exc)
        walked = _walk(leaf, intermediates, state.anchors)
        for cert in walked or ():
            subject = cert.subject.rfc4514_string()
            if at > cert.not_valid_after_utc:
                raise CertificateError(
                    f"certificate {subject} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z",
                    code="cert.expired",
                )
            if at < cert.not_valid_before_utc:
                raise CertificateError(
                    f"certificate {subject} is valid from"
                    f" {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z",
                    code="cert.not-yet-valid",
                )
        raise CertificateError(
            f"certificate {leaf.subject.rfc4514_string()} does not chain to a trusted CA"
            f" ({_ENCOUNTERED.sub('', refusal.removeprefix('validation failed: '))})",
            code="cert.untrusted",
        )

    def _check_revocation(
        self, state: _State, path: Sequence[x509.Certificate], at: datetime
    ) -> None:
        for cert, issuer in itertools.pairwise(path):
            believed = [
                crl
                for crl in state.crls
                if crl.issuer == cert.issuer and self._is_signed_by(crl, issuer)
            ]
            for crl in believed:
                if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                    raise CertificateError(
                        f"certificate {cert.subject.rfc4514_string()} (serial"
                        f" {cert.serial_number:x}) is revoked by its issuer's CRL",
                        code="cert.revoked",
                    )
            stale = [crl for crl in believed if _is_stale(crl, at)]
            for crl in stale:
                self._log_stale(crl)
            if self._refuse_stale_crl and believed and len(stale) == len(believed):
                raise CertificateError(
                    f"revocation status of {cert.subject.rfc4514_string()} unknown: the CRL of"
                    f" {cert.issuer.rfc4514_string()} is past its nextUpdate",
                    code="cert.untrusted",
                )

    def _is_signed_by(self, crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
        key = (crl.fingerprint(hashes.SHA256()), issuer.fingerprint(hashes.SHA256()))
        signed = self._signed.get(key)
        if signed is None:
            signed = self._signed[key] = _signed_by(crl, issuer)
            if not signed:
                log.warning(
                    "trust.crl.ignored",
                    reason="not signed by the certificate's issuer",
                    issuer=crl.issuer.rfc4514_string(),
                )
        return signed

    def _log_stale(self, crl: x509.CertificateRevocationList) -> None:
        key = crl.fingerprint(hashes.SHA256())
        if key not in self._stale_logged:
            self._stale_logged.add(key)
            log.warning(
                "trust.crl.stale",
                issuer=crl.issuer.rfc4514_string(),
                next_update=str(crl.next_update_utc),
                used=not self._refuse_stale_crl,
            )


def owner(cert: x509.Certificate, parties: PartyRegistry) -> Identity | None:
    """The party or role ``cert`` belongs to, or None.

    A party: the one whose certificate rule (``Party.certificate_match``: its parties.toml
    ``[certificate]`` table, by default its KBO number as subject serialNumber or its
    ``urn:be:guichet:party:<id>`` SAN URI) the certificate meets. A role: the certificate's one
    ``urn:be:guichet:role:<name>`` SAN URI. None when it meets none, or is ambiguous: it meets
    two parties' rules, or a party's and a role's, or carries a ``urn:be:guichet:`` URI naming
    anyone else than the party it meets (KBO of A, URI of B). An ambiguous certificate identifies
    nobody; callers answer it as they answer an unknown one. Call it on a validated certificate.
    """
    uris = guichet_uris(cert)
    matched = [p for p in parties.parties.values() if p.certificate_match.matches(cert)]
    if any(uri.startswith(ROLE_URN) for uri in uris):
        return None if matched else identity_of(cert)  # one role URI and nothing else
    if len(matched) != 1:
        return None
    party = matched[0]
    own = {PARTY_URN + party.id, party.certificate_match.san_uri}
    if any(uri not in own for uri in uris):
        return None
    return Identity("party", party.id)


def load_certificate(data: bytes) -> x509.Certificate:
    """One certificate, PEM or DER; ``cert.malformed`` if it is neither."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"certificate cannot be read: {exc}", code="cert.malformed") from exc


def _check_usage(leaf: x509.Certificate) -> None:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise CertificateError(
            f"certificate {leaf.subject.rfc4514_string()} has no keyUsage", code="cert.usage"
        ) from None
    if not usage.digital_signature:
        raise CertificateError(
            f"certificate {leaf.subject.rfc4514_string()} is not for digital signatures",
            code="cert.usage",
        )


def _walk(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
) -> list[x509.Certificate] | None:
    """A path from ``leaf`` to an anchor by issuer name and signature only (no dates, no
    constraints): to explain a refusal, never to accept."""
    path = [leaf]
    for _ in range(_MAX_DEPTH):
        current = path[-1]
        anchor = next((a for a in anchors if _issued_by(current, a)), None)
        if anchor is not None:
            return [*path, anchor]
        step = next((c for c in intermediates if c not in path and _issued_by(current, c)), None)
        if step is None:
            return None
        path.append(step)
    return None


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False


def _is_stale(crl: x509.CertificateRevocationList, at: datetime) -> bool:
    return crl.next_update_utc is not None and at > crl.next_update_utc


def _read_cas(data: bytes) -> tuple[x509.Certificate, ...]:
    cas = tuple(x509.load_pem_x509_certificates(data))
    if not cas:
        raise ValueError("no certificate in it")
    return cas


def _read_crl(data: bytes) -> x509.CertificateRevocationList:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Owners:
    """:func:`owner` for one parties config, remembered per certificate: matching a
    certificate against every party's rule costs more than verifying a signature, and the same
    few certificates call again and again. Thread-safe (``lru_cache`` is); bounded."""

    def __init__(self, parties: PartyRegistry, size: int = _CACHE_SIZE) -> None:
        self.parties = parties
        self._of = lru_cache(maxsize=size)(self._owner)

    def _owner(self, cert: x509.Certificate) -> Identity | None:
        return owner(cert, self.parties)

    def __call__(self, cert: x509.Certificate) -> Identity | None:
        return self._of(cert)
