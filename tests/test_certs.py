"""The dev PKI, checked by cryptography and, independently, by the openssl command line."""

from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.certs import (
    VARIANTS,
    DevPki,
    Identity,
    PartyIdentity,
    identity_of,
    init_dev_pki,
    revoke,
)
from tests.conftest import guichet

PARTIES = (
    PartyIdentity("be-platform", "Plateforme belge", "0123456749"),
    PartyIdentity("fr-region", "Region Flandre", "0987654321"),
)

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki"), PARTIES)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def all_certs(pki: DevPki) -> list[Path]:
    return sorted(p for p in pki.directory.glob("*.pem") if p != pki.crl)


def good_certs(pki: DevPki) -> list[Path]:
    """Every certificate but the test ones meant to fail (revoked, expired)."""
    bad = {pki.variant("be-platform", v).cert for v in ("revoked", "expired")}
    return [p for p in all_certs(pki) if p not in bad]


def openssl_verify(pki: DevPki, *certs: Path, crl: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["openssl", "verify", "-CAfile", str(pki.ca_cert)]
    if crl:
        command += ["-crl_check", "-CRLfile", str(pki.crl)]
    return subprocess.run(
        [*command, *map(str, certs)], capture_output=True, text=True, timeout=30, check=False
    )


def test_writes_every_file(pki: DevPki) -> None:
    stems = {path.stem for path in all_certs(pki)}
    assert stems == {
        "ca",
        "hub",
        "hub-signing",
        "be-platform",
        "fr-region",
        "role-operator",
        "role-auditor",
        *(f"be-platform-{variant}" for variant in VARIANTS),
    }
    assert pki.crl.is_file()
    # Every certificate's key, and the payload master key (no certificate: a symmetric key).
    assert {path.stem for path in pki.directory.glob("*.key")} == stems | {"payload-master"}


def test_private_keys_are_owner_only(pki: DevPki) -> None:
    for key in pki.directory.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_ca_signs_leaves_only(pki: DevPki) -> None:
    ca = load(pki.ca_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign


def test_party_certificate_carries_kbo_number_and_urn(pki: DevPki) -> None:
    cert = load(pki.party("be-platform").cert)
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "be-platform"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Plateforme belge"
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "0123456749"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:be:guichet:party:be-platform"
    ]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_hub_certificate_names_its_hosts(pki: DevPki) -> None:
    cert = load(pki.hub_cert)
    assert cert.subject.rfc4514_string() == "O=Guichet,CN=guichet-hub"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_signing_certificate_only_signs(pki: DevPki) -> None:
    usage = load(pki.signing_cert).extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not (usage.key_cert_sign or usage.key_agreement or usage.content_commitment)


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("be-platform", Identity("party", "be-platform")),
        ("fr-region", Identity("party", "fr-region")),
        ("role-operator", Identity("role", "operator")),
        ("role-auditor", Identity("role", "auditor")),
        ("hub", None),
        ("hub-signing", None),
        ("ca", None),
    ],
)
def test_identity_of(pki: DevPki, stem: str, expected: Identity | None) -> None:
    assert identity_of(load(pki.directory / f"{stem}.pem")) == expected


def test_validity_follows_now_and_valid_days(tmp_path: Path) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    pki = init_dev_pki(tmp_path, PARTIES[:1], valid_days=30, now=now)
    cert = load(pki.party("be-platform").cert)
    assert now - timedelta(hours=1) < cert.not_valid_before_utc <= now
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30)


def test_refuses_to_replace_a_ca_unless_forced(tmp_path: Path) -> None:
    first = init_dev_pki(tmp_path, PARTIES)
    old_ca = first.ca_cert.read_bytes()
    with pytest.raises(FileExistsError):
        init_dev_pki(tmp_path, PARTIES)
    assert first.ca_cert.read_bytes() == old_ca
    init_dev_pki(tmp_path, PARTIES, force=True)
    assert first.ca_cert.read_bytes() != old_ca
    assert stat.S_IMODE(first.ca_key.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "party",
    [
        PartyIdentity("../escape", "Evil", "0123456749"),
        PartyIdentity("Upper", "Evil", "0123456749"),
        PartyIdentity("hub", "Collides with the hub", "0123456749"),
        PartyIdentity("be-platform", "Short KBO", "12345"),
        PartyIdentity("be-platform", "Letters", "01234567ab"),
        PartyIdentity("be-platform-2", "Collides with a variant", "0123456749"),
    ],
)
def test_rejects_unsafe_parties(tmp_path: Path, party: PartyIdentity) -> None:
    with pytest.raises(ValueError):
        init_dev_pki(
            tmp_path, [PARTIES[0], party] if party.party_id == "be-platform-2" else [party]
        )
    assert not any(tmp_path.iterdir())


def test_reopens_an_existing_pki(pki: DevPki) -> None:
    again = DevPki.at(pki.directory)
    assert again == pki
    assert again.role("operator").cert.name == "role-operator.pem"
    with pytest.raises(FileNotFoundError):
        again.party("nobody")


@needs_openssl
def test_openssl_verifies_every_certificate(pki: DevPki) -> None:
    for cert in good_certs(pki):
        result = openssl_verify(pki, cert)
        assert result.returncode == 0, (cert, result.stdout, result.stderr)


@needs_openssl
def test_openssl_refuses_the_revoked_and_the_expired(pki: DevPki) -> None:
    revoked = openssl_verify(pki, pki.variant("be-platform", "revoked").cert)
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr
    # Without the CRL the revoked one chains: only the CRL refuses it.
    assert (
        openssl_verify(pki, pki.variant("be-platform", "revoked").cert, crl=False).returncode == 0
    )
    expired = openssl_verify(pki, pki.variant("be-platform", "expired").cert)
    assert expired.returncode != 0
    assert "certificate has expired" in expired.stdout + expired.stderr


def test_variants_share_the_party_subject(pki: DevPki) -> None:
    own = load(pki.party("be-platform").cert)
    keys = set()
    for variant in VARIANTS:
        cert = load(pki.variant("be-platform", variant).cert)
        assert cert.subject == own.subject
        assert identity_of(cert) == Identity("party", "be-platform")
        keys.add(cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    assert len(keys) == len(VARIANTS)
    rsa_key = load(pki.variant("be-platform", "rsa").cert).public_key()
    assert isinstance(rsa_key, rsa.RSAPublicKey)
    assert rsa_key.key_size == 2048
    expired = load(pki.variant("be-platform", "expired").cert)
    assert expired.not_valid_after_utc < datetime.now(UTC)
    with pytest.raises(FileNotFoundError):
        pki.variant("fr-region", "revoked")  # one party only gets them
    with pytest.raises(ValueError):
        pki.variant("be-platform", "../ca")


def test_crl_lists_the_revoked_variant_and_is_signed_by_the_ca(pki: DevPki) -> None:
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    assert crl.is_signature_valid(load(pki.ca_cert).public_key())  # type: ignore[arg-type]
    assert crl.issuer == load(pki.ca_cert).subject
    revoked = load(pki.variant("be-platform", "revoked").cert).serial_number
    assert [entry.serial_number for entry in crl] == [revoked]
    assert crl.next_update_utc is not None
    assert timedelta(days=6) < crl.next_update_utc - datetime.now(UTC) <= timedelta(days=7)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1


@needs_openssl
def test_revoke_adds_to_the_crl(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path, PARTIES)
    cert = pki.party("fr-region").cert
    assert openssl_verify(pki, cert).returncode == 0
    assert revoke(pki, cert)
    assert not revoke(pki, cert)  # already listed: nothing rewritten
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    assert len(list(crl)) == 2
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    result = openssl_verify(pki, cert)
    assert "certificate revoked" in result.stdout + result.stderr
    assert openssl_verify(pki, pki.party("be-platform").cert).returncode == 0


def test_revoke_refuses_another_cas_certificate(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "one", PARTIES)
    other = init_dev_pki(tmp_path / "two", PARTIES, variants_of=None)
    before = pki.crl.read_bytes()
    with pytest.raises(ValueError, match="not issued"):
        revoke(pki, other.party("be-platform").cert)
    assert pki.crl.read_bytes() == before
    assert list(x509.load_pem_x509_crl(other.crl.read_bytes())) == []  # no variants: empty CRL


@needs_openssl
@pytest.mark.parametrize("purpose", ["sslclient", "sslserver"])
def test_openssl_accepts_party_certificates_for_tls(pki: DevPki, purpose: str) -> None:
    result = subprocess.run(
        ["openssl", "verify", "-purpose", purpose, "-CAfile", str(pki.ca_cert)]
        + [str(pki.party(p.party_id).cert) for p in PARTIES],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_openssl
def test_openssl_shows_kbo_number_in_subject(pki: DevPki) -> None:
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-in", str(pki.party("fr-region").cert)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "serialNumber = 0987654321" in subject
    assert "CN = fr-region" in subject


@needs_openssl
def test_openssl_rejects_a_foreign_ca(pki: DevPki, tmp_path: Path) -> None:
    foreign = init_dev_pki(tmp_path, PARTIES[:1])
    result = openssl_verify(pki, foreign.party("be-platform").cert)
    assert result.returncode != 0


@needs_openssl
def test_certs_revoke_command(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path, PARTIES)
    cert = pki.variant("be-platform", "2").cert
    first = guichet("certs", "revoke", "--dir", str(tmp_path), str(cert))
    assert first.returncode == 0, first.stderr
    assert "revoked" in first.stdout
    result = openssl_verify(pki, cert)
    assert "certificate revoked" in result.stdout + result.stderr
    again = guichet("certs", "revoke", "--dir", str(tmp_path), str(cert))
    assert again.returncode == 0
    assert "already revoked" in again.stdout
    foreign = init_dev_pki(tmp_path / "other", PARTIES[:1], variants_of=None)
    refused = guichet("certs", "revoke", "--dir", str(tmp_path), str(foreign.hub_cert))
    assert refused.returncode != 0
    assert "not issued by the CA" in refused.stderr
