"""A development PKI for the hub, its parties and its human roles, and who a certificate names.

``init_dev_pki`` writes one directory::

    ca.pem / ca.key                      self-signed CA (pathlen 0: it signs leaves only)
    hub.pem / hub.key                    the hub: TLS server, and TLS client towards back offices
    hub-signing.pem / hub-signing.key    the hub's evidence signer (digitalSignature only, no TLS)
    <party_id>.pem / .key                one per party: client of the hub, server of its sandbox
    role-<name>.pem / .key               one per extra role (operator, auditor)
    crl.pem                              the CA's CRL (nextUpdate in 7 days); ``revoke`` adds to it
    <party>-2.pem / .key                 for one party (be-platform), test certificates: a second
    <party>-revoked.pem / .key           valid one (key rotation), one listed in crl.pem, one
    <party>-expired.pem / .key           whose notAfter has passed, and one with an RSA-2048 key
    <party>-rsa.pem / .key               (``DevPki.variant``); all carry the party's subject
    payload-master.key                   32 random bytes: wraps the keys of the bodies kept
    payload-master.<key id>.key          (after a rotation) older master keys, which unwrap only

Who a certificate names: ``identity_of`` reads one SAN URI only, ``urn:be:guichet:party:<id>`` or
``urn:be:guichet:role:<name>``; ``gateway.trust.owner`` also maps a party by its subject (by
default serialNumber, the KBO number, as Belgian application certificates carry it) following a
party's :class:`CertificateMatch` from parties.toml. The subject's CN and O are for humans.

Keys are unencrypted PKCS#8 (mode 0600): this is for development and tests, never production.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "SUBJECT_ATTRIBUTES",
    "VARIANTS",
    "CertificateMatch",
    "DevPki",
    "Identity",
    "PartyIdentity",
    "TlsFiles",
    "guichet_uris",
    "identity_of",
    "init_dev_pki",
    "revoke",
    "write_master_key",
]

PARTY_URN = "urn:be:guichet:party:"
ROLE_URN = "urn:be:guichet:role:"

# Names become file names and URN suffixes, so they are kept to a safe alphabet (no path tricks).
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62})")
# File stems the PKI uses itself; a party with one of these names would overwrite them.
_RESERVED = frozenset({"ca", "hub", "hub-signing"})
# The SAN of the hub's evidence-signing certificate: a certificate without it signs no evidence
# an auditor accepts (gateway.audit.verify_chain), whatever CA issued it.
EVIDENCE_SIGNER_URI = "urn:be:guichet:evidence-signer"
# Tolerate a few minutes of clock skew between the machine that issues and the one that checks.
_BACKDATE = timedelta(minutes=5)
# The test certificates init_dev_pki writes for one party, besides its own (DevPki.variant):
# "2" a second valid one (key rotation), "revoked" listed in crl.pem, "expired" past its notAfter,
# "rsa" an RSA-2048 key (the others are ECDSA P-256).
VARIANTS = ("2", "revoked", "expired", "rsa")
CRL_VALID = timedelta(days=7)  # nextUpdate of the dev CRL, from each (re)write

_KEY = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class PartyIdentity:
    """A party to be issued a certificate; ``enterprise_number`` is its 10-digit KBO number."""

    party_id: str
    organisation: str
    enterprise_number: str


@dataclass(frozen=True)
class TlsFiles:
    """One end of a TLS connection: its certificate, its key, and the CA its peer chains to."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class Identity:
    """Who a certificate names: a party (``be-platform``) or a role (``operator``)."""

    kind: Literal["party", "role"]
    name: str


@dataclass(frozen=True)
class DevPki:
    """The paths of a development PKI; ``DevPki.at(directory)`` reopens one written earlier."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    hub_cert: Path
    hub_key: Path
    signing_cert: Path
    signing_key: Path
    payload_key: Path

    @classmethod
    def at(cls, directory: Path) -> DevPki:
        return cls(
            directory=directory,
            ca_cert=directory / "ca.pem",
            ca_key=directory / "ca.key",
            hub_cert=directory / "hub.pem",
            hub_key=directory / "hub.key",
            signing_cert=directory / "hub-signing.pem",
            signing_key=directory / "hub-signing.key",
            payload_key=directory / "payload-master.key",
        )

    @property
    def retired_payload_keys(self) -> list[Path]:
        """Master keys replaced by a rotation: they still unwrap the bodies they wrapped."""
        return sorted(self.directory.glob("payload-master.*.key"))

    @property
    def hub(self) -> TlsFiles:
        return TlsFiles(cert=self.hub_cert, key=self.hub_key, ca=self.ca_cert)

    def party(self, party_id: str) -> TlsFiles:
        """The files of one party; ``FileNotFoundError`` if this PKI never issued it."""
        return self._leaf(_checked_name(party_id, "party id"))

    def role(self, name: str) -> TlsFiles:
        return self._leaf("role-" + _checked_name(name, "role name"))

    def variant(self, party_id: str, name: str) -> TlsFiles:
        """A party's test certificate (``VARIANTS``): ``variant("be-platform", "revoked")``."""
        if name not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {name!r}")
        return self._leaf(f"{_checked_name(party_id, 'party id')}-{name}")

    @property
    def crl(self) -> Path:
        """The CA's CRL (it may be absent from a PKI written before CRLs were)."""
        return self.directory / "crl.pem"

    @property
    def crl_files(self) -> list[Path]:
        """The CRL files this PKI has: its ``crl.pem`` when it exists, else none."""
        return [self.crl] if self.crl.is_file() else []

    def _leaf(self, stem: str) -> TlsFiles:
        files = TlsFiles(
            cert=self.directory / f"{stem}.pem",
            key=self.directory / f"{stem}.key",
            ca=self.ca_cert,
        )
        if not files.cert.is_file():
            raise FileNotFoundError(f"no certificate {files.cert} in this PKI")
        return files


def init_dev_pki(
    directory: Path,
    parties: Sequence[PartyIdentity],
    *,
    hub_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    extra_roles: Sequence[str] = ("operator", "auditor"),
    valid_days: int = 825,
    now: datetime | None = None,
    force: bool = False,
    variants_of: str | None = "be-platform",
) -> DevPki:
    """Write a fresh CA and every certificate into ``directory``, and the CA's CRL.

    ``variants_of`` (when it is one of ``parties``) also gets the test certificates of
    ``VARIANTS``; its revoked one is the only entry of ``crl.pem``.

    Refuses (``FileExistsError``) to replace an existing CA unless ``force``: every certificate
    issued by it, possibly copied to back offices, would silently stop being trusted.
    """
    variant_stems = {f"{p.party_id}-{v}" for p in parties for v in VARIANTS}
    for party in parties:
        _checked_name(party.party_id, "party id")
        if party.party_id in _RESERVED or party.party_id in variant_stems:
            raise ValueError(f"party id {party.party_id!r} is reserved by the PKI")
        if not (len(party.enterprise_number) == 10 and party.enterprise_number.isdigit()):
            raise ValueError(
                f"enterprise number of {party.party_id!r} must be 10 digits, "
                f"got {party.enterprise_number!r}"
            )
    for role in extra_roles:
        _checked_name(role, "role name")
    if len({p.party_id for p in parties}) != len(parties):
        raise ValueError("party ids must be unique")

    pki = DevPki.at(directory)
    if not force and (pki.ca_cert.exists() or pki.ca_key.exists()):
        raise FileExistsError(
            f"a CA already exists in {directory}; replace it with --force (force=True)"
        )
    directory.mkdir(parents=True, exist_ok=True)

    now = now or datetime.now(UTC)
    start = now - _BACKDATE
    issuer = _Issuer.self_signed(start, start + timedelta(days=valid_days))
    _write_pem(pki.ca_cert, issuer.cert)
    _write_key(pki.ca_key, issuer.key)

    tls_usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    issuer.issue(
        pki.hub_cert,
        pki.hub_key,
        _name(common_name="guichet-hub", organisation="Guichet"),
        sans=[_host_san(host) for host in hub_hosts],
        usages=tls_usage,
    )
    # A separate key for evidence: compromise of the TLS key must not let anyone forge evidence.
    # Its one SAN names its purpose (EVIDENCE_SIGNER_URI), which an auditor's verification
    # requires; it names no party or role, so presented on a TLS connection it identifies nobody.
    issuer.issue(
        pki.signing_cert,
        pki.signing_key,
        _name(common_name="guichet-hub evidence signer", organisation="Guichet"),
        sans=[x509.UniformResourceIdentifier(EVIDENCE_SIGNER_URI)],
        usages=None,
    )
    revoked: list[x509.Certificate] = []
    for party in parties:
        subject = _name(
            common_name=party.party_id,
            organisation=party.organisation,
            serial_number=party.enterprise_number,
        )
        # localhost SANs because the party's sandbox back office serves TLS with this cert too.
        sans = [
            x509.UniformResourceIdentifier(PARTY_URN + party.party_id),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]
        issuer.issue(
            directory / f"{party.party_id}.pem",
            directory / f"{party.party_id}.key",
            subject,
            sans=sans,
            usages=tls_usage,
        )
        if party.party_id != variants_of:
            continue
        # The same subject and SANs as the party's own: each one maps to the party.
        for variant in VARIANTS:
            cert = issuer.issue(
                directory / f"{party.party_id}-{variant}.pem",
                directory / f"{party.party_id}-{variant}.key",
                subject,
                sans=sans,
                usages=tls_usage,
                # The RSA key is the slow part of the whole PKI (some 50 ms): one, here only.
                key=rsa.generate_private_key(65537, 2048) if variant == "rsa" else None,
                # Valid for a month, ended a day before the CA's start: expired, never valid now.
                window=(start - timedelta(days=31), start - timedelta(days=1))
                if variant == "expired"
                else None,
            )
            if variant == "revoked":
                revoked.append(cert)
    for role in extra_roles:
        issuer.issue(
            directory / f"role-{role}.pem",
            directory / f"role-{role}.key",
            _name(common_name=role, organisation="Guichet"),
            sans=[x509.UniformResourceIdentifier(ROLE_URN + role)],
            usages=[ExtendedKeyUsageOID.CLIENT_AUTH],  # people call the hub; they serve nothing
        )
    _write_crl(pki.crl, issuer.crl([(c.serial_number, start) for c in revoked], 1, now))
    # Kept even with force: a new CA must not erase every body the old master key wraps.
    write_master_key(pki.payload_key)
    return pki


def revoke(pki: DevPki, cert_path: Path, *, now: datetime | None = None) -> bool:
    """Add the certificate at ``cert_path`` to the PKI's CRL, rewritten (atomically) with the
    next CRL number, thisUpdate ``now`` and nextUpdate a week later. False if it was already
    listed; ``ValueError`` if the PKI's CA did not issue it."""
    now = now or datetime.now(UTC)
    issuer = _Issuer.load(pki)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        cert.verify_directly_issued_by(issuer.cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ValueError(f"{cert_path} was not issued by the CA of {pki.directory}") from exc
    entries: list[tuple[int, datetime]] = []
    number = 0
    if pki.crl.is_file():
        old = x509.load_pem_x509_crl(pki.crl.read_bytes())
        entries = [(r.serial_number, r.revocation_date_utc) for r in old]
        try:
            number = old.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            number = 0
    if any(serial == cert.serial_number for serial, _ in entries):
        return False
    entries.append((cert.serial_number, now))
    _write_crl(pki.crl, issuer.crl(entries, number + 1, now))
    return True


def write_master_key(path: Path) -> bool:
    """Write a fresh payload master key (32 random bytes, mode 0600) at ``path``, never over an
    existing one: replacing it would erase every body it wraps. True if written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(os.urandom(32))
        handle.flush()
        os.fsync(handle.fileno())
    return True


def identity_of(cert: x509.Certificate) -> Identity | None:
    """The party or role a certificate names, from its ``urn:be:guichet:`` SAN URI only.

    ``None`` when it names none, or more than one: an ambiguous certificate identifies nobody.
    New callers use ``gateway.trust.owner``, which also follows parties.toml's certificate
    mapping (the KBO number in the subject by default).
    """
    found: list[Identity] = []
    for uri in guichet_uris(cert):
        if uri.startswith(PARTY_URN):
            found.append(Identity("party", uri.removeprefix(PARTY_URN)))
        elif uri.startswith(ROLE_URN):
            found.append(Identity("role", uri.removeprefix(ROLE_URN)))
    if len(found) != 1 or not _NAME.fullmatch(found[0].name):
        return None
    return found[0]


def san_uris(cert: x509.Certificate) -> list[str]:
    """The URIs of a certificate's subjectAltName (none without one)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(sans.get_values_for_type(x509.UniformResourceIdentifier))


def guichet_uris(cert: x509.Certificate) -> list[str]:
    """The SAN URIs naming a party or role of the hub (``urn:be:guichet:party:`` / ``role:``)."""
    return [u for u in san_uris(cert) if u.startswith((PARTY_URN, ROLE_URN))]


# Subject attributes a party's [certificate] table may name (or a dotted OID, "2.5.4.97").
SUBJECT_ATTRIBUTES: Mapping[str, x509.ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "organizationIdentifier": NameOID.ORGANIZATION_IDENTIFIER,
    "emailAddress": NameOID.EMAIL_ADDRESS,
}
_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")


@dataclass(frozen=True)
class CertificateMatch:
    """Which certificates belong to a party: those whose subject has every attribute of
    ``subject`` (each exactly once, with that value), OR those carrying ``san_uri`` among their
    SAN URIs. An empty rule (neither) matches nothing.

    ``default_for`` is the rule of a party with no ``[certificate]`` table: its KBO number as the
    subject's serialNumber, or its ``urn:be:guichet:party:<id>`` SAN URI.
    """

    subject: tuple[tuple[str, str], ...] = ()  # (attribute name as written, value)
    san_uri: str | None = None

    @classmethod
    def default_for(cls, party_id: str, enterprise_number: str) -> CertificateMatch:
        return cls((("serialNumber", enterprise_number),), PARTY_URN + party_id)

    @classmethod
    def of(
        cls, subject: Mapping[str, str] | None = None, san_uri: str | None = None
    ) -> CertificateMatch:
        """A rule from a parties.toml table; ``ValueError`` on an unknown attribute, an empty
        or non-string value, or a SAN URI naming a role."""
        for name, value in (subject or {}).items():
            _attribute_oid(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"subject {name} must be a non-empty string, not {value!r}")
        if san_uri is not None and (not isinstance(san_uri, str) or not san_uri):
            raise ValueError(f"san_uri must be a non-empty string, not {san_uri!r}")
        if san_uri is not None and san_uri.startswith(ROLE_URN):
            raise ValueError(f"san_uri {san_uri!r} names a role, not a party")
        if not subject and san_uri is None:
            raise ValueError("a certificate rule needs a subject, a san_uri, or both")
        return cls(tuple(sorted((subject or {}).items())), san_uri)

    def matches(self, cert: x509.Certificate) -> bool:
        return self.matches_subject(cert) or self.matches_san(cert)

    def matches_subject(self, cert: x509.Certificate) -> bool:
        if not self.subject:
            return False
        for name, value in self.subject:
            found = cert.subject.get_attributes_for_oid(_attribute_oid(name))
            if len(found) != 1 or found[0].value != value:
                return False
        return True

    def matches_san(self, cert: x509.Certificate) -> bool:
        return self.san_uri is not None and self.san_uri in san_uris(cert)

    def overlap(self, other: CertificateMatch) -> str | None:
        """Why one certificate could match both rules by the same part (a subject with the
        attributes of both, or the same SAN URI), or None. A subject of one and the SAN URI of
        the other can only be caught certificate by certificate (``gateway.trust.owner``)."""
        if self.san_uri is not None and self.san_uri == other.san_uri:
            return f"the same san_uri {self.san_uri!r}"
        if self.subject and other.subject:
            mine = {_attribute_oid(n): v for n, v in self.subject}
            theirs = {_attribute_oid(n): v for n, v in other.subject}
            if all(theirs[oid] == value for oid, value in mine.items() if oid in theirs):
                both = dict(self.subject) | dict(other.subject)
                return f"a subject with {both} matches both"
        return None


def _attribute_oid(name: str) -> x509.ObjectIdentifier:
    if name in SUBJECT_ATTRIBUTES:
        return SUBJECT_ATTRIBUTES[name]
    if _OID.fullmatch(name):
        return x509.ObjectIdentifier(name)
    raise ValueError(
        f"unknown subject attribute {name!r}: one of {sorted(SUBJECT_ATTRIBUTES)} or a dotted OID"
    )


@dataclass(frozen=True)
class _Issuer:
    """The CA while it issues: its key, certificate, and the validity window it hands out."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    not_before: datetime
    not_after: datetime

    @classmethod
    def load(cls, pki: DevPki) -> _Issuer:
        """The CA of an existing PKI, to sign with again (a CRL)."""
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError(f"{pki.ca_key} is not the EC key of a dev CA")
        cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        return cls(key, cert, cert.not_valid_before_utc, cert.not_valid_after_utc)

    def crl(
        self, entries: Sequence[tuple[int, datetime]], number: int, now: datetime
    ) -> x509.CertificateRevocationList:
        """A CRL listing ``entries`` (serial, revocation date), valid from a little before
        ``now`` (clock skew) for ``CRL_VALID``."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + CRL_VALID)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        for serial, when in entries:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        return builder.sign(self.key, hashes.SHA256())

    @classmethod
    def self_signed(cls, not_before: datetime, not_after: datetime) -> _Issuer:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name="Guichet development CA", organisation="Guichet")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            # pathlen 0: the CA signs leaves only, never another CA.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, cert=cert, not_before=not_before, not_after=not_after)

    def issue(
        self,
        cert_path: Path,
        key_path: Path,
        subject: x509.Name,
        *,
        sans: Sequence[x509.GeneralName],
        usages: Sequence[x509.ObjectIdentifier] | None,
        key: _KEY | None = None,
        window: tuple[datetime, datetime] | None = None,
    ) -> x509.Certificate:
        key = key or ec.generate_private_key(ec.SECP256R1())
        not_before, not_after = window or (self.not_before, self.not_after)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        _write_pem(cert_path, cert)
        _write_key(key_path, key)
        return cert


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    # ECDSA TLS leaves need digitalSignature only: ECDHE agrees keys with ephemeral keys.
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _name(*, common_name: str, organisation: str, serial_number: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
    ]
    if serial_number is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    return x509.Name(attributes)


def _host_san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _checked_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} must match {_NAME.pattern}")
    return name


def _write_pem(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_crl(path: Path, crl: x509.CertificateRevocationList) -> None:
    """Replace the CRL atomically: a reader (the hub's TrustStore) sees the old or the new one."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".crl-", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(crl.public_bytes(serialization.Encoding.PEM))
        tmp.chmod(0o644)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_key(path: Path, key: _KEY) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 so the key is never readable by others, not even between create and chmod;
    # fchmod as well because O_CREAT's mode does not apply to a file that already exists (force).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(pem)
