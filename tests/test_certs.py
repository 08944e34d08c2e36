"""The dev PKI, checked by cryptography and, independently, by the openssl command line."""

from __future__ import annotations

import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.certs import DevPki, Identity, PartyIdentity, identity_of, init_dev_pki

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
    return sorted(pki.directory.glob("*.pem"))


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
    }
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
    ],
)
def test_rejects_unsafe_parties(tmp_path: Path, party: PartyIdentity) -> None:
    with pytest.raises(ValueError):
        init_dev_pki(tmp_path, [party])
    assert not any(tmp_path.iterdir())


def test_reopens_an_existing_pki(pki: DevPki) -> None:
    again = DevPki.at(pki.directory)
    assert again == pki
    assert again.role("operator").cert.name == "role-operator.pem"
    with pytest.raises(FileNotFoundError):
        again.party("nobody")


@needs_openssl
def test_openssl_verifies_every_certificate(pki: DevPki) -> None:
    for cert in all_certs(pki):
        result = subprocess.run(
            ["openssl", "verify", "-CAfile", str(pki.ca_cert), str(cert)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, (cert, result.stdout, result.stderr)


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
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(pki.ca_cert), str(foreign.party("be-platform").cert)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
