"""gateway.trust: which certificates the hub trusts, and whose they are, on real dev PKI files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from gateway.certs import DevPki, Identity, init_dev_pki, revoke
from gateway.config import PartyRegistry, load_parties
from gateway.errors import CertificateError, ConfigurationError
from gateway.trust import TrustStore, load_certificate, owner
from tests.conftest import HOME

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def registry() -> PartyRegistry:
    return load_parties(HOME / "parties.toml")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, registry: PartyRegistry) -> DevPki:
    """The PKI `guichet certs init` writes for parties.toml (read only: tests that revoke make
    their own)."""
    return init_dev_pki(tmp_path_factory.mktemp("pki"), registry.identities())


@pytest.fixture(scope="module")
def store(pki: DevPki) -> TrustStore:
    return TrustStore.from_pki(pki)


@pytest.fixture
def fresh(tmp_path: Path, registry: PartyRegistry) -> DevPki:
    """A PKI of one's own, to revoke in."""
    return init_dev_pki(tmp_path / "pki", registry.identities()[:2])


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def refusal(store: TrustStore, cert: x509.Certificate, **kwargs: object) -> str:
    with pytest.raises(CertificateError) as caught:
        store.validate(cert, **kwargs)  # type: ignore[arg-type]
    return caught.value.code


# -- A small CA of the test's own: intermediates, other usages, other subjects ----------------


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def of(cls, pki: DevPki) -> Ca:
        key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cls(key, load(pki.ca_cert))

    @classmethod
    def root(cls, name: str = "Test root", *, pathlen: int = 1) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, subject, key.public_key(), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def intermediate(self, name: str, *, days: tuple[int, int] = (-1, 30)) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, self.cert.subject, key.public_key(), self.key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(ca=True), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        return Ca(key, cert)

    def leaf(
        self,
        *,
        serial_number: str | None = "0316380940",
        organisation: str = "Working in Belgium portal",
        uris: Sequence[str] = (),
        digital_signature: bool = True,
    ) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [
            x509.NameAttribute(NameOID.COMMON_NAME, "leaf"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
        ]
        if serial_number is not None:
            attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
        builder = _builder(
            x509.Name(attributes), self.cert.subject, key.public_key(), self.key.public_key()
        ).add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(
            _usage(ca=False, digital_signature=digital_signature), critical=True
        )
        if uris:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
                critical=False,
            )
        return builder.sign(self.key, hashes.SHA256())

    def crl(self, *revoked: x509.Certificate, next_update_days: int = 7) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(NOW - timedelta(minutes=5))
            .next_update(NOW + timedelta(days=next_update_days))
        )
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(NOW)
                .build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer_key: ec.EllipticCurvePublicKey,
    days: tuple[int, int] = (-1, 30),
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=days[0]))
        .not_valid_after(NOW + timedelta(days=days[1]))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key), False)
    )


def _usage(*, ca: bool, digital_signature: bool = True) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature and not ca,
        content_commitment=False,
        key_encipherment=not digital_signature,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# -- Validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [None, "2", "rsa"])
def test_valid_certificates_are_accepted_and_name_their_party(
    store: TrustStore, pki: DevPki, registry: PartyRegistry, variant: str | None
) -> None:
    files = pki.party("be-platform") if variant is None else pki.variant("be-platform", variant)
    cert = load(files.cert)
    assert store.validate(cert) is cert
    assert owner(cert, registry) == Identity("party", "be-platform")


def test_every_party_and_role_of_parties_toml_is_recognised(
    store: TrustStore, pki: DevPki, registry: PartyRegistry
) -> None:
    for party_id in registry.parties:
        cert = store.validate(load(pki.party(party_id).cert))
        assert owner(cert, registry) == Identity("party", party_id)
    for role in ("operator", "auditor"):
        cert = store.validate(load(pki.role(role).cert))
        assert owner(cert, registry) == Identity("role", role)
    # The hub's own certificates chain, and name nobody.
    assert owner(store.validate(load(pki.hub_cert)), registry) is None
    assert owner(store.validate(load(pki.signing_cert)), registry) is None


def test_expired_and_not_yet_valid(store: TrustStore, pki: DevPki) -> None:
    assert refusal(store, load(pki.variant("be-platform", "expired").cert)) == "cert.expired"
    cert = load(pki.party("be-platform").cert)
    assert refusal(store, cert, at=cert.not_valid_before_utc - timedelta(days=1)) == (
        "cert.not-yet-valid"
    )
    assert refusal(store, cert, at=cert.not_valid_after_utc + timedelta(days=1)) == "cert.expired"


def test_the_cache_does_not_outlive_a_certificate(store: TrustStore, pki: DevPki) -> None:
    cert = load(pki.party("be-vlg-wse").cert)
    store.validate(cert)
    store.validate(cert)  # from the cache
    assert refusal(store, cert, at=cert.not_valid_after_utc + timedelta(seconds=1)) == (
        "cert.expired"
    )


def test_the_clock_decides_when_no_time_is_given(pki: DevPki) -> None:
    cert = load(pki.party("be-platform").cert)
    later = cert.not_valid_after_utc + timedelta(hours=1)
    assert refusal(TrustStore.from_pki(pki, clock=lambda: later), cert) == "cert.expired"


def test_revoked(store: TrustStore, pki: DevPki) -> None:
    assert refusal(store, load(pki.variant("be-platform", "revoked").cert)) == "cert.revoked"


def test_another_cas_certificates_are_untrusted(store: TrustStore, tmp_path: Path) -> None:
    other = init_dev_pki(tmp_path, [], variants_of=None)  # same CA name, another key
    assert refusal(store, load(other.hub_cert)) == "cert.untrusted"
    # Untrusted first: an expired certificate of a CA we do not know is not "expired".
    assert refusal(store, Ca.of(other).leaf(), at=NOW + timedelta(days=5000)) == ("cert.untrusted")


def test_a_ca_is_no_leaf(store: TrustStore, pki: DevPki) -> None:
    assert refusal(store, load(pki.ca_cert)) == "cert.untrusted"


def test_key_usage_must_allow_digital_signature(pki: DevPki) -> None:
    store = TrustStore.from_pki(pki)
    assert refusal(store, Ca.of(pki).leaf(digital_signature=False)) == "cert.usage"


def test_intermediates(tmp_path: Path) -> None:
    root = Ca.root()
    issuing = root.intermediate("Test issuing CA")
    leaf = issuing.leaf()
    store = TrustStore([write(tmp_path / "root.pem", pem(root.cert))])
    assert store.validate(leaf, [issuing.cert]) is leaf
    assert refusal(store, leaf) == "cert.untrusted"  # no path without it
    # An expired intermediate expires the path.
    stale = root.intermediate("Old issuing CA", days=(-60, -30))
    assert refusal(store, stale.leaf(), intermediates=[stale.cert]) == "cert.expired"
    # The root's CRL revokes the intermediate, and with it every certificate it issued.
    crl = write(tmp_path / "root.crl", root.crl(issuing.cert))
    revoking = TrustStore([tmp_path / "root.pem"], [crl])
    assert refusal(revoking, leaf, intermediates=[issuing.cert]) == "cert.revoked"
    # The intermediate's own CRL counts for its leaves.
    other_leaf = root.intermediate("Another issuing CA")
    crl2 = write(tmp_path / "issuing.crl", other_leaf.crl(leaf2 := other_leaf.leaf()))
    both = TrustStore([tmp_path / "root.pem"], [crl2])
    assert refusal(both, leaf2, intermediates=[other_leaf.cert]) == "cert.revoked"
    assert both.validate(other_leaf.leaf(), [other_leaf.cert])


def test_a_ca_with_pathlen_0_signs_no_intermediate(tmp_path: Path) -> None:
    root = Ca.root(pathlen=0)
    issuing = root.intermediate("Not allowed")
    store = TrustStore([write(tmp_path / "root.pem", pem(root.cert))])
    assert refusal(store, issuing.leaf(), intermediates=[issuing.cert]) == "cert.untrusted"


# -- CRLs ---------------------------------------------------------------------------------------


def test_a_crl_is_reloaded_when_it_changes(fresh: DevPki) -> None:
    store = TrustStore.from_pki(fresh, recheck_s=0)
    cert = load(fresh.variant("be-platform", "2").cert)
    store.validate(cert)
    generation = store.generation
    assert revoke(fresh, fresh.variant("be-platform", "2").cert)
    assert refusal(store, cert) == "cert.revoked"
    assert store.generation == generation + 1
    assert not store.reload_if_changed()  # nothing new since


def test_files_are_checked_at_most_every_recheck_s(fresh: DevPki) -> None:
    store = TrustStore.from_pki(fresh, recheck_s=3600)
    cert = load(fresh.party("be-platform").cert)
    store.validate(cert)
    revoke(fresh, fresh.party("be-platform").cert)
    store.validate(cert)  # not looked at yet
    assert store.reload_if_changed()
    assert refusal(store, cert) == "cert.revoked"


def test_key_rotation_two_certificates_then_one(fresh: DevPki, registry: PartyRegistry) -> None:
    store = TrustStore.from_pki(fresh, recheck_s=0)
    old, new = load(fresh.party("be-platform").cert), load(fresh.variant("be-platform", "2").cert)
    for cert in (old, new):
        assert owner(store.validate(cert), registry) == Identity("party", "be-platform")
    revoke(fresh, fresh.party("be-platform").cert)
    assert refusal(store, old) == "cert.revoked"
    assert owner(store.validate(new), registry) == Identity("party", "be-platform")


def test_a_broken_or_vanished_crl_keeps_the_previous_one(fresh: DevPki) -> None:
    store = TrustStore.from_pki(fresh, recheck_s=0)
    revoked = load(fresh.variant("be-platform", "revoked").cert)
    with capture_logs() as logs:
        fresh.crl.write_bytes(b"-----BEGIN X509 CRL-----\nnot a crl\n-----END X509 CRL-----\n")
        assert refusal(store, revoked) == "cert.revoked"
        assert refusal(store, revoked) == "cert.revoked"
        fresh.crl.unlink()
        assert refusal(store, revoked) == "cert.revoked"
    errors = [e for e in logs if e["event"] == "trust.file.unreadable"]
    assert len(errors) == 2  # once per bad version, not once per request
    assert all(e["log_level"] == "error" for e in errors)
    # A good CRL again (an empty one): loaded.
    write(fresh.crl, Ca.of(fresh).crl())
    store.validate(revoked)


def test_a_crl_signed_by_another_ca_is_ignored(tmp_path: Path, pki: DevPki) -> None:
    cert = load(pki.party("be-platform").cert)
    # Our CA's name, another key: a forgery listing a good certificate.
    impostor = Ca(ec.generate_private_key(ec.SECP256R1()), load(pki.ca_cert))
    forged = write(tmp_path / "forged.pem", impostor.crl(cert))
    with capture_logs() as logs:
        store = TrustStore([pki.ca_cert], [forged])
        assert store.validate(cert) is cert
    events = {e["event"] for e in logs}
    assert {"trust.crl.no-configured-issuer", "trust.crl.ignored"} <= events


def test_a_stale_crl_still_revokes_and_is_logged(pki: DevPki) -> None:
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    assert crl.next_update_utc is not None
    later = crl.next_update_utc + timedelta(days=1)
    store = TrustStore.from_pki(pki)
    with capture_logs() as logs:
        assert store.validate(load(pki.party("be-platform").cert), at=later)
        assert refusal(store, load(pki.variant("be-platform", "revoked").cert), at=later) == (
            "cert.revoked"
        )
    assert [e["event"] for e in logs].count("trust.crl.stale") == 1
    strict = TrustStore.from_pki(pki, refuse_stale_crl=True)
    assert refusal(strict, load(pki.party("be-platform").cert), at=later) == "cert.untrusted"
    assert strict.validate(load(pki.party("be-platform").cert))  # a fresh CRL: fine


def test_a_crl_in_der_is_read(tmp_path: Path, pki: DevPki) -> None:
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    der = write(tmp_path / "crl.der", crl.public_bytes(serialization.Encoding.DER))
    store = TrustStore([pki.ca_cert], [der])
    assert refusal(store, load(pki.variant("be-platform", "revoked").cert)) == "cert.revoked"


def test_files_must_load_at_start(tmp_path: Path, pki: DevPki) -> None:
    with pytest.raises(ConfigurationError):
        TrustStore([tmp_path / "missing.pem"])
    with pytest.raises(ConfigurationError):
        TrustStore([])
    with pytest.raises(ConfigurationError):
        TrustStore([pki.ca_cert], [write(tmp_path / "bad.crl", b"garbage")])
    with pytest.raises(ConfigurationError):
        TrustStore([write(tmp_path / "empty.pem", b"")])


def test_a_new_ca_file_is_picked_up(tmp_path: Path, pki: DevPki) -> None:
    ca_file = write(tmp_path / "ca.pem", pki.ca_cert.read_bytes())
    store = TrustStore([ca_file], recheck_s=0)
    root = Ca.root()
    leaf = root.leaf()
    assert refusal(store, leaf) == "cert.untrusted"
    write(ca_file, pki.ca_cert.read_bytes() + pem(root.cert))
    os.utime(ca_file, ns=(1, 1))  # a different mtime even on a coarse clock
    assert store.validate(leaf) is leaf
    assert store.validate(load(pki.party("be-platform").cert))


def test_load_certificate() -> None:
    cert = Ca.root().leaf()
    assert load_certificate(pem(cert)) == cert
    assert load_certificate(cert.public_bytes(serialization.Encoding.DER)) == cert
    with pytest.raises(CertificateError) as caught:
        load_certificate(b"nonsense")
    assert caught.value.code == "cert.malformed"


# -- Whose certificate --------------------------------------------------------------------------


def test_mapping_by_kbo_number_without_any_san(pki: DevPki, registry: PartyRegistry) -> None:
    cert = Ca.of(pki).leaf(serial_number=registry["be-fed-ibz"].enterprise_number)
    assert cert.extensions.get_extension_for_class(x509.KeyUsage)
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    store = TrustStore.from_pki(pki)
    assert owner(store.validate(cert), registry) == Identity("party", "be-fed-ibz")


def test_mapping_by_san_uri_without_a_kbo_number(pki: DevPki, registry: PartyRegistry) -> None:
    cert = Ca.of(pki).leaf(serial_number=None, uris=["urn:be:guichet:party:be-vlg-wse"])
    assert owner(cert, registry) == Identity("party", "be-vlg-wse")


@pytest.mark.parametrize(
    ("serial_number", "uris"),
    [
        # The KBO number of be-platform, the URI of be-fed-ibz: whose? Nobody's.
        ("0316380940", ["urn:be:guichet:party:be-fed-ibz"]),
        # A party URI no party has, besides a KBO number that matches.
        ("0316380940", ["urn:be:guichet:party:someone-else"]),
        # A party and a role at once.
        ("0316380940", ["urn:be:guichet:role:operator"]),
        # Two roles.
        (None, ["urn:be:guichet:role:operator", "urn:be:guichet:role:auditor"]),
        # Nothing the parties know.
        ("0999999999", []),
        (None, ["urn:be:guichet:party:someone-else"]),
    ],
)
def test_ambiguous_or_unknown_certificates_name_nobody(
    pki: DevPki, registry: PartyRegistry, serial_number: str | None, uris: list[str]
) -> None:
    assert owner(Ca.of(pki).leaf(serial_number=serial_number, uris=uris), registry) is None


def test_a_kbo_number_given_twice_in_the_subject_names_nobody(
    pki: DevPki, registry: PartyRegistry
) -> None:
    ca = Ca.of(pki)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "0316380940"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "0362475538"),
        ]
    )
    cert = _builder(subject, ca.cert.subject, key.public_key(), ca.key.public_key()).sign(
        ca.key, hashes.SHA256()
    )
    assert owner(cert, registry) is None


def parties_with(tmp_path: Path, extra: str) -> PartyRegistry:
    path = tmp_path / "parties.toml"
    path.write_text((HOME / "parties.toml").read_text() + "\n" + extra)
    return load_parties(path)


def test_a_certificate_table_replaces_the_default_rule(tmp_path: Path, pki: DevPki) -> None:
    registry = parties_with(
        tmp_path,
        """
[parties.be-platform.certificate]
subject = { serialNumber = "0316380940", O = "Working in Belgium portal" }

[parties.be-fed-ibz.certificate]
san_uri = "https://ibz.example/hub-client"
""",
    )
    ca = Ca.of(pki)
    assert owner(ca.leaf(), registry) == Identity("party", "be-platform")
    # Every attribute must match: the right KBO number under another organisation is nobody.
    assert owner(ca.leaf(organisation="Someone else"), registry) is None
    # Its own URN is no conflict, but no longer enough alone.
    assert owner(ca.leaf(uris=["urn:be:guichet:party:be-platform"]), registry) == Identity(
        "party", "be-platform"
    )
    assert (
        owner(ca.leaf(serial_number=None, uris=["urn:be:guichet:party:be-platform"]), registry)
        is None
    )
    ibz = ca.leaf(serial_number=None, uris=["https://ibz.example/hub-client"])
    assert owner(ibz, registry) == Identity("party", "be-fed-ibz")
    # be-fed-ibz's KBO number no longer maps to it.
    assert owner(ca.leaf(serial_number="0362475538"), registry) is None
    # The dev PKI's be-platform certificates carry that organisation: they still map.
    dev = load(pki.party("be-platform").cert)
    assert owner(dev, load_parties(HOME / "parties.toml")) == Identity("party", "be-platform")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # Two parties, one subject rule (a certificate with both attributes meets both).
        (
            '[parties.be-fed-ibz.certificate]\nsubject = { serialNumber = "0316380940",'
            ' O = "x" }\n',
            "be-platform and be-fed-ibz",
        ),
        (
            '[parties.be-fed-ibz.certificate]\nsan_uri = "urn:be:guichet:party:be-platform"\n',
            "same san_uri",
        ),
        ('[parties.be-fed-ibz.certificate]\nsubject = { nickname = "x" }\n', "unknown subject"),
        ("[parties.be-fed-ibz.certificate]\nsubject = {}\n", "non-empty"),
        ("[parties.be-fed-ibz.certificate]\nsubject = { O = 3 }\n", "non-empty string"),
        ('[parties.be-fed-ibz.certificate]\nsan_uri = "urn:be:guichet:role:operator"\n', "role"),
        ('[parties.be-fed-ibz.certificate]\nissuer = "x"\n', "unknown keys"),
        ("[parties.be-fed-ibz.certificate]\n", "needs a subject"),
    ],
)
def test_bad_or_overlapping_certificate_tables_are_refused(
    tmp_path: Path, extra: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parties_with(tmp_path, extra)


def test_distinct_subject_rules_load(tmp_path: Path) -> None:
    registry = parties_with(
        tmp_path,
        '[parties.be-fed-ibz.certificate]\nsubject = { "2.5.4.5" = "0362475538", C = "BE" }\n',
    )
    assert registry["be-fed-ibz"].certificate_match.subject == (
        ("2.5.4.5", "0362475538"),
        ("C", "BE"),
    )
