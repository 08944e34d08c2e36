"""A development PKI for the hub, its parties and its human roles, and who a certificate names.

``init_dev_pki`` writes one directory::

    ca.pem / ca.key                      self-signed CA (pathlen 0: it signs leaves only)
    hub.pem / hub.key                    the hub: TLS server, and TLS client towards back offices
    hub-signing.pem / hub-signing.key    the hub's evidence signer (digitalSignature only, no TLS)
    <party_id>.pem / .key                one per party: client of the hub, server of its sandbox
    role-<name>.pem / .key               one per extra role (operator, auditor)
    payload-master.key                   32 random bytes: wraps the keys of the bodies kept
    payload-master.<key id>.key          (after a rotation) older master keys, which unwrap only

Who a certificate names is read from one SAN URI only, ``urn:be:guichet:party:<id>`` or
``urn:be:guichet:role:<name>`` (``identity_of``): the subject's CN and O are for humans reading
logs, and serialNumber carries the KBO number as Belgian application certificates do.

Keys are unencrypted PKCS#8 (mode 0600): this is for development and tests, never production.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DevPki",
    "Identity",
    "PartyIdentity",
    "TlsFiles",
    "identity_of",
    "init_dev_pki",
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
) -> DevPki:
    """Write a fresh CA and every certificate into ``directory``.

    Refuses (``FileExistsError``) to replace an existing CA unless ``force``: every certificate
    issued by it, possibly copied to back offices, would silently stop being trusted.
    """
    for party in parties:
        _checked_name(party.party_id, "party id")
        if party.party_id in _RESERVED:
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

    start = (now or datetime.now(UTC)) - _BACKDATE
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
    for party in parties:
        issuer.issue(
            directory / f"{party.party_id}.pem",
            directory / f"{party.party_id}.key",
            _name(
                common_name=party.party_id,
                organisation=party.organisation,
                serial_number=party.enterprise_number,
            ),
            # localhost SANs because the party's sandbox back office serves TLS with this cert too.
            sans=[
                x509.UniformResourceIdentifier(PARTY_URN + party.party_id),
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ],
            usages=tls_usage,
        )
    for role in extra_roles:
        issuer.issue(
            directory / f"role-{role}.pem",
            directory / f"role-{role}.key",
            _name(common_name=role, organisation="Guichet"),
            sans=[x509.UniformResourceIdentifier(ROLE_URN + role)],
            usages=[ExtendedKeyUsageOID.CLIENT_AUTH],  # people call the hub; they serve nothing
        )
    # Kept even with force: a new CA must not erase every body the old master key wraps.
    write_master_key(pki.payload_key)
    return pki


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
    """The party or role a certificate names, from its ``urn:be:guichet:`` SAN URI.

    ``None`` when it names none, or more than one: an ambiguous certificate identifies nobody.
    """
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    found: list[Identity] = []
    for uri in sans.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(PARTY_URN):
            found.append(Identity("party", uri.removeprefix(PARTY_URN)))
        elif uri.startswith(ROLE_URN):
            found.append(Identity("role", uri.removeprefix(ROLE_URN)))
    if len(found) != 1 or not _NAME.fullmatch(found[0].name):
        return None
    return found[0]


@dataclass(frozen=True)
class _Issuer:
    """The CA while it issues: its key, certificate, and the validity window it hands out."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    not_before: datetime
    not_after: datetime

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
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_after)
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
        _write_pem(cert_path, builder.sign(self.key, hashes.SHA256()))
        _write_key(key_path, key)


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


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
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
