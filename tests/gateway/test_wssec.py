"""WS-Security (gateway.wssec): round trips, interop with xmlsec1 both ways, and hostile envelopes.

The helpers below are meant to be imported (e.g. by whoever builds the hostile corpus):

* ``envelope(version, payload)`` — an unsigned SOAP 1.1 or 1.2 envelope;
* ``wssec_template(cert, version, ...)`` — a signature template for ``xmlsec1 --sign``;
* ``xmlsec1_sign`` / ``xmlsec1_verify`` — the Debian ``xmlsec1`` CLI, the exact command lines;
* ``hostile_*`` — each takes signed envelope bytes and returns a hostile variant (bytes); the
  code ``verify_envelope`` must answer is in ``HOSTILE_CODES``.
"""

from __future__ import annotations

import base64
import copy
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree

from gateway.certs import DevPki, PartyIdentity, init_dev_pki
from gateway.errors import SignatureError
from gateway.signing import SigningKey
from gateway.wssec import (
    BASE64_BINARY,
    DS_NS,
    ECDSA_SHA256,
    EXC_C14N,
    RSA_SHA256,
    SHA256,
    WSSE_NS,
    WSU_NS,
    X509V3,
    sign_envelope,
    verify_envelope,
)
from gateway.xml import SOAP_ENVELOPE_NS, SoapVersion, parse_xml

XMLSEC1 = shutil.which("xmlsec1") or "/usr/bin/xmlsec1"
needs_xmlsec1 = pytest.mark.skipif(not Path(XMLSEC1).exists(), reason="xmlsec1 not installed")
PAYLOAD_NS = "urn:example:aanvraag"
WSU_ID = f"{{{WSU_NS}}}Id"
VERSIONS: tuple[SoapVersion, ...] = ("1.1", "1.2")

# ---------------------------------------------------------------------------------------------
# Envelopes and keys


def envelope(version: SoapVersion = "1.1", payload: str | None = None) -> bytes:
    """An unsigned envelope of ``version`` with one payload element (and a header entry)."""
    namespace = SOAP_ENVELOPE_NS[version]
    payload = payload or (
        f'<a:Aanvraag xmlns:a="{PAYLOAD_NS}"><a:Naam>Jan Peeters</a:Naam>'
        "<a:Bedrag>125.50</a:Bedrag></a:Aanvraag>"
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope xmlns:soap="{namespace}">\n'
        f'  <soap:Header><h:MessageId xmlns:h="urn:example:h">m-1</h:MessageId></soap:Header>\n'
        f"  <soap:Body>{payload}</soap:Body>\n</soap:Envelope>\n"
    ).encode()


def rsa_signer(pki: DevPki, directory: Path, bits: int = 2048) -> tuple[SigningKey, Path, Path]:
    """An RSA key and a leaf certificate issued by the dev PKI's CA; (signer, cert, key) files."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"rsa-{bits}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"rsa-{bits}.pem", directory / f"rsa-{bits}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return SigningKey(key, (cert,)), cert_path, key_path


@pytest.fixture(scope="module")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(
        tmp_path_factory.mktemp("wssec-pki"), [PartyIdentity("alpha", "Alpha", "0123456789")]
    )


@pytest.fixture(scope="module")
def ec_files(dev_pki: DevPki) -> tuple[SigningKey, Path, Path]:
    files = dev_pki.party("alpha")
    return SigningKey.from_files(files.cert, files.key), files.cert, files.key


@pytest.fixture(scope="module")
def rsa_files(dev_pki: DevPki) -> tuple[SigningKey, Path, Path]:
    return rsa_signer(dev_pki, dev_pki.directory)


@pytest.fixture(params=["ec", "rsa"])
def signer_files(
    request: pytest.FixtureRequest,
    ec_files: tuple[SigningKey, Path, Path],
    rsa_files: tuple[SigningKey, Path, Path],
) -> tuple[SigningKey, Path, Path]:
    return ec_files if request.param == "ec" else rsa_files


@pytest.fixture
def signer(ec_files: tuple[SigningKey, Path, Path]) -> SigningKey:
    return ec_files[0]


def now() -> datetime:
    return datetime.now(UTC)


def verify(data: bytes, **kwargs: object) -> object:
    return verify_envelope(parse_xml(data), now=kwargs.pop("now", now()), **kwargs)  # type: ignore[arg-type]


def refused(data: bytes, **kwargs: object) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify(data, **kwargs)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("version", VERSIONS)
def test_round_trip(version: SoapVersion, signer_files: tuple[SigningKey, Path, Path]) -> None:
    signer, _, _ = signer_files
    signed = sign_envelope(envelope(version), signer)
    root = parse_xml(signed)
    verified = verify_envelope(root, now=now())

    body = root.find(f"{{{SOAP_ENVELOPE_NS[version]}}}Body")
    assert body is not None
    assert verified.payload is body[0]
    assert verified.payload.tag == f"{{{PAYLOAD_NS}}}Aanvraag"
    assert verified.header is root.find(f"{{{SOAP_ENVELOPE_NS[version]}}}Header")
    security = root.find(f".//{{{WSSE_NS}}}Security")
    assert security is not None
    assert security.get(f"{{{SOAP_ENVELOPE_NS[version]}}}mustUnderstand") == "1"

    signature = verified.signature
    assert signature.format == "wsse"
    assert signature.certificate == signer.certificate
    assert signature.chain == ()
    evidence = signature.evidence
    created = datetime.fromisoformat(evidence["created"])
    lifetime = datetime.fromisoformat(evidence["expires"]) - created
    assert timedelta(0) < lifetime <= timedelta(minutes=5)  # the Timestamp's
    # The replay cache keeps it while it is accepted: its Expires and the skew (60 s).
    assert signature.expires_at - signature.signed_at == lifetime + timedelta(seconds=60)
    algorithm = RSA_SHA256 if isinstance(signer.key, rsa.RSAPrivateKey) else ECDSA_SHA256
    assert evidence["algorithm"] == algorithm
    assert evidence["format"] == "wsse"
    assert [r["element"] for r in evidence["references"]] == [
        "Body",
        "Timestamp",
        "BinarySecurityToken",
    ]
    assert evidence["signedInfo"].startswith("<ds:SignedInfo")
    raw = base64.b64decode(evidence["signatureValue"])
    if algorithm == ECDSA_SHA256:
        assert len(raw) == 64  # r||s on P-256, not DER
    assert x509.load_der_x509_certificate(base64.b64decode(evidence["certificate"])) == (
        signer.certificate
    )


def test_two_signatures_of_one_envelope_differ(signer: SigningKey) -> None:
    first, second = (sign_envelope(envelope(), signer) for _ in range(2))
    assert first != second
    a, b = verify(first), verify(second)
    assert a.signature.fingerprint != b.signature.fingerprint  # type: ignore[attr-defined]


def test_header_added_when_missing(signer: SigningKey) -> None:
    bare = (
        f'<soap:Envelope xmlns:soap="{SOAP_ENVELOPE_NS["1.2"]}"><soap:Body>'
        f'<a:Ping xmlns:a="{PAYLOAD_NS}"/></soap:Body></soap:Envelope>'
    ).encode()
    verified = verify(sign_envelope(bare, signer))
    assert verified.payload.tag == f"{{{PAYLOAD_NS}}}Ping"  # type: ignore[attr-defined]


def test_comments_in_signed_parts_do_not_matter(signer: SigningKey) -> None:
    root = parse_xml(sign_envelope(envelope(), signer))
    name = root.find(f".//{{{PAYLOAD_NS}}}Naam")
    assert name is not None
    name.append(etree.Comment(" a remark added on the way "))
    verify(etree.tostring(root))


def test_signing_twice_is_refused(signer: SigningKey) -> None:
    with pytest.raises(ValueError, match="already"):
        sign_envelope(sign_envelope(envelope(), signer), signer)


# ---------------------------------------------------------------------------------------------
# Interop with xmlsec1


def xmlsec1_id_options(version: SoapVersion) -> list[str]:
    """xmlsec1 knows no wsu:Id: each element signed by its id is named to it."""
    return [
        "--id-attr:Id",
        f"{SOAP_ENVELOPE_NS[version]}:Body",
        "--id-attr:Id",
        f"{WSU_NS}:Timestamp",
        "--id-attr:Id",
        f"{WSSE_NS}:BinarySecurityToken",
    ]


def xmlsec1_verify(
    signed: Path, cert: Path, version: SoapVersion
) -> subprocess.CompletedProcess[str]:
    """``xmlsec1 --verify`` with the signer's certificate given: xmlsec1 cannot resolve a
    SecurityTokenReference, so the key comes from ``--pubkey-cert-pem``."""
    argv = [XMLSEC1, "--verify", "--pubkey-cert-pem", str(cert), *xmlsec1_id_options(version)]
    return subprocess.run(
        [*argv, str(signed)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def xmlsec1_sign(template: Path, key: Path, out: Path, version: SoapVersion) -> None:
    """``xmlsec1 --sign`` a template (empty DigestValues and SignatureValue) into ``out``."""
    argv = [XMLSEC1, "--sign", "--privkey-pem", str(key), *xmlsec1_id_options(version)]
    subprocess.run(
        [*argv, "--output", str(out), str(template)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def wssec_template(
    cert: x509.Certificate,
    version: SoapVersion,
    *,
    signature_method: str,
    digest_method: str = SHA256,
    transform: str = EXC_C14N,
    created: datetime | None = None,
    ttl_s: int = 300,
    prefix_list: str | None = None,
) -> bytes:
    """A WS-Security envelope with everything but the digests and the signature value, laid
    out as another implementation would (indented, namespaces declared where used, SOAP 1.x)."""
    created = created or now()
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    token = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    inclusive = (
        ""
        if prefix_list is None
        else f'<ec:InclusiveNamespaces xmlns:ec="{EXC_C14N}" PrefixList="{prefix_list}"/>'
    )
    references = "".join(
        f'\n          <ds:Reference URI="#{target}"><ds:Transforms>'
        f'<ds:Transform Algorithm="{transform}">{inclusive}</ds:Transform></ds:Transforms>'
        f'<ds:DigestMethod Algorithm="{digest_method}"/><ds:DigestValue/></ds:Reference>'
        for target in ("id-body", "id-ts", "id-token")
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="{SOAP_ENVELOPE_NS[version]}">
  <soap:Header>
    <wsse:Security xmlns:wsse="{WSSE_NS}" xmlns:wsu="{WSU_NS}" soap:mustUnderstand="1">
      <wsu:Timestamp wsu:Id="id-ts">
        <wsu:Created>{created.strftime(stamp)}</wsu:Created>
        <wsu:Expires>{(created + timedelta(seconds=ttl_s)).strftime(stamp)}</wsu:Expires>
      </wsu:Timestamp>
      <wsse:BinarySecurityToken EncodingType="{BASE64_BINARY}" ValueType="{X509V3}"
          wsu:Id="id-token">{token}</wsse:BinarySecurityToken>
      <ds:Signature xmlns:ds="{DS_NS}">
        <ds:SignedInfo>
          <ds:CanonicalizationMethod Algorithm="{EXC_C14N}">{inclusive}</ds:CanonicalizationMethod>
          <ds:SignatureMethod Algorithm="{signature_method}"/>{references}
        </ds:SignedInfo>
        <ds:SignatureValue/>
        <ds:KeyInfo>
          <wsse:SecurityTokenReference>
            <wsse:Reference URI="#id-token" ValueType="{X509V3}"/>
          </wsse:SecurityTokenReference>
        </ds:KeyInfo>
      </ds:Signature>
    </wsse:Security>
  </soap:Header>
  <soap:Body xmlns:wsu="{WSU_NS}" wsu:Id="id-body">
    <a:Aanvraag xmlns:a="{PAYLOAD_NS}"><a:Naam>Jan Peeters</a:Naam></a:Aanvraag>
  </soap:Body>
</soap:Envelope>
""".encode()


@needs_xmlsec1
@pytest.mark.parametrize("version", VERSIONS)
def test_xmlsec1_verifies_what_the_hub_signs(
    version: SoapVersion, signer_files: tuple[SigningKey, Path, Path], tmp_path: Path
) -> None:
    signer, cert, _ = signer_files
    signed = tmp_path / "signed.xml"
    signed.write_bytes(sign_envelope(envelope(version), signer))
    result = xmlsec1_verify(signed, cert, version)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == "OK"
    assert "SignedInfo References (ok/all): 3/3" in result.stderr

    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(signed.read_bytes().replace(b"Jan Peeters", b"Jan Peeters-Janssens"))
    result = xmlsec1_verify(tampered, cert, version)
    assert result.returncode != 0
    assert "FAIL" in result.stderr


@needs_xmlsec1
def test_xmlsec1_refuses_another_key(
    ec_files: tuple[SigningKey, Path, Path],
    rsa_files: tuple[SigningKey, Path, Path],
    tmp_path: Path,
) -> None:
    signed = tmp_path / "signed.xml"
    signed.write_bytes(sign_envelope(envelope(), ec_files[0]))
    result = xmlsec1_verify(signed, rsa_files[1], "1.1")
    assert result.returncode != 0


@needs_xmlsec1
@pytest.mark.parametrize("version", VERSIONS)
def test_hub_verifies_what_xmlsec1_signs(
    version: SoapVersion, signer_files: tuple[SigningKey, Path, Path], tmp_path: Path
) -> None:
    signer, _, key = signer_files
    method = RSA_SHA256 if isinstance(signer.key, rsa.RSAPrivateKey) else ECDSA_SHA256
    template, out = tmp_path / "template.xml", tmp_path / "out.xml"
    template.write_bytes(wssec_template(signer.certificate, version, signature_method=method))
    xmlsec1_sign(template, key, out, version)

    verified = verify_envelope(parse_xml(out.read_bytes()), now=now())
    assert verified.payload.tag == f"{{{PAYLOAD_NS}}}Aanvraag"
    assert verified.signature.certificate == signer.certificate
    assert verified.signature.evidence["algorithm"] == method
    # And the same bytes, once changed, are refused.
    changed = out.read_bytes().replace(b"Jan Peeters", b"Piet Peeters")
    assert refused(changed).code == "signature.invalid"


@needs_xmlsec1
@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"signature_method": "http://www.w3.org/2000/09/xmldsig#rsa-sha1"}, "signature.algorithm"),
        ({"digest_method": "http://www.w3.org/2000/09/xmldsig#sha1"}, "signature.algorithm"),
        ({"transform": "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"}, "signature.algorithm"),
        ({"ttl_s": 3600}, "signature.stale"),
    ],
)
def test_hub_refuses_what_xmlsec1_signs_otherwise(
    changes: dict[str, object],
    code: str,
    rsa_files: tuple[SigningKey, Path, Path],
    tmp_path: Path,
) -> None:
    """Real signatures (they verify) with what the profile does not accept."""
    signer, _, key = rsa_files
    options: dict[str, object] = {"signature_method": RSA_SHA256, **changes}
    template, out = tmp_path / "template.xml", tmp_path / "out.xml"
    template.write_bytes(wssec_template(signer.certificate, "1.1", **options))  # type: ignore[arg-type]
    xmlsec1_sign(template, key, out, "1.1")
    assert refused(out.read_bytes()).code == code


# ---------------------------------------------------------------------------------------------
# Hostile variants: each takes signed envelope bytes and returns a hostile copy


def _tree(signed: bytes) -> etree._Element:
    return parse_xml(signed)


def _bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _soap(root: etree._Element) -> str:
    return etree.QName(root).namespace or ""


def _one(root: etree._Element, path: str) -> etree._Element:
    found = root.find(path, {"ds": DS_NS, "wsse": WSSE_NS, "wsu": WSU_NS, "soap": _soap(root)})
    assert found is not None, path
    return found


def _unsigned_body(root: etree._Element, text: str = "Mallory") -> etree._Element:
    body = etree.Element(f"{{{_soap(root)}}}Body")
    payload = etree.SubElement(body, f"{{{PAYLOAD_NS}}}Aanvraag")
    etree.SubElement(payload, f"{{{PAYLOAD_NS}}}Naam").text = text
    return body


def hostile_body_moved_into_header(signed: bytes) -> bytes:
    """The signed Body moved into a header entry; a new, unsigned Body in its place."""
    root = _tree(signed)
    body = _one(root, "soap:Body")
    wrapper = etree.SubElement(_one(root, "soap:Header"), "{urn:example:evil}Wrapper")
    root.replace(body, _unsigned_body(root))
    wrapper.append(body)
    return _bytes(root)


def hostile_second_body(signed: bytes) -> bytes:
    """An unsigned second Body after the signed one."""
    root = _tree(signed)
    root.append(_unsigned_body(root))
    return _bytes(root)


def hostile_unsigned_body_first(signed: bytes) -> bytes:
    """An unsigned Body before the signed one (a processor taking the first is fooled)."""
    root = _tree(signed)
    body = _one(root, "soap:Body")
    root.insert(root.index(body), _unsigned_body(root))
    return _bytes(root)


def hostile_duplicate_body_id(signed: bytes) -> bytes:
    """A copy of the signed Body (same wsu:Id) kept in a header entry, the real Body changed."""
    root = _tree(signed)
    body = _one(root, "soap:Body")
    etree.SubElement(_one(root, "soap:Header"), "{urn:example:evil}Wrapper").append(
        copy.deepcopy(body)
    )
    _one(body, f".//{{{PAYLOAD_NS}}}Naam").text = "Mallory"
    return _bytes(root)


def hostile_id_in_other_attribute(signed: bytes) -> bytes:
    """Another element carrying the Body's id in a plain ``Id`` attribute (which other
    processors take for an id)."""
    root = _tree(signed)
    body_id = _one(root, "soap:Body").get(WSU_ID, "")
    evil = etree.SubElement(_one(root, "soap:Header"), "{urn:example:evil}Other")
    evil.set("Id", body_id)
    return _bytes(root)


def hostile_reference_outside(signed: bytes) -> bytes:
    """The Body's Reference pointed at an element outside the signed three (a header entry)."""
    root = _tree(signed)
    other = _one(root, "soap:Header/{urn:example:h}MessageId")
    other.set(WSU_ID, "elsewhere")
    reference = _one(root, ".//ds:SignedInfo/ds:Reference")
    reference.set("URI", "#elsewhere")
    return _bytes(root)


def hostile_reference_to_payload(signed: bytes) -> bytes:
    """The Body's Reference pointed at the payload element (not the Body itself)."""
    root = _tree(signed)
    body = _one(root, "soap:Body")
    body[0].set(WSU_ID, "payload")
    _one(root, ".//ds:SignedInfo/ds:Reference").set("URI", "#payload")
    return _bytes(root)


def hostile_duplicate_timestamp(signed: bytes) -> bytes:
    """A second Timestamp in the Security header."""
    root = _tree(signed)
    timestamp = _one(root, ".//wsse:Security/wsu:Timestamp")
    timestamp.addnext(copy.deepcopy(timestamp))
    return _bytes(root)


def hostile_second_signature(signed: bytes) -> bytes:
    """A second ds:Signature in the Security header."""
    root = _tree(signed)
    signature = _one(root, ".//wsse:Security/ds:Signature")
    signature.addnext(copy.deepcopy(signature))
    return _bytes(root)


def hostile_tampered_body(signed: bytes) -> bytes:
    """The payload's text changed after signing."""
    root = _tree(signed)
    _one(root, f".//{{{PAYLOAD_NS}}}Naam").text = "Mallory"
    return _bytes(root)


def hostile_tampered_timestamp(signed: bytes) -> bytes:
    """The Timestamp's Expires pushed back by a minute after signing."""
    root = _tree(signed)
    expires = _one(root, ".//wsu:Timestamp/wsu:Expires")
    moment = datetime.fromisoformat(expires.text or "") + timedelta(minutes=1)
    expires.text = moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return _bytes(root)


def hostile_signature_method(uri: str) -> Callable[[bytes], bytes]:
    """A variant whose SignatureMethod is ``uri`` (e.g. HMAC-SHA256)."""

    def variant(signed: bytes) -> bytes:
        root = _tree(signed)
        _one(root, ".//ds:SignatureMethod").set("Algorithm", uri)
        return _bytes(root)

    return variant


def hostile_digest_method(uri: str) -> Callable[[bytes], bytes]:
    """A variant whose Body Reference's DigestMethod is ``uri`` (e.g. SHA-1)."""

    def variant(signed: bytes) -> bytes:
        root = _tree(signed)
        _one(root, ".//ds:Reference/ds:DigestMethod").set("Algorithm", uri)
        return _bytes(root)

    return variant


def hostile_without_security(signed: bytes) -> bytes:
    """The Security header removed."""
    root = _tree(signed)
    security = _one(root, ".//wsse:Security")
    parent = security.getparent()
    assert parent is not None
    parent.remove(security)
    return _bytes(root)


def hostile_key_info_elsewhere(signed: bytes) -> bytes:
    """KeyInfo pointed at a token other than the Security header's."""
    root = _tree(signed)
    _one(root, ".//ds:KeyInfo/wsse:SecurityTokenReference/wsse:Reference").set("URI", "#other")
    return _bytes(root)


HMAC_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"

# Each hostile variant and the code verify_envelope answers it with.
HOSTILE_CODES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "body-moved-into-header": (hostile_body_moved_into_header, "signature.wrapping"),
    "second-body": (hostile_second_body, "signature.wrapping"),
    "unsigned-body-first": (hostile_unsigned_body_first, "signature.wrapping"),
    "duplicate-body-id": (hostile_duplicate_body_id, "signature.wrapping"),
    "id-in-other-attribute": (hostile_id_in_other_attribute, "signature.wrapping"),
    "reference-outside": (hostile_reference_outside, "signature.wrapping"),
    "reference-to-payload": (hostile_reference_to_payload, "signature.wrapping"),
    "duplicate-timestamp": (hostile_duplicate_timestamp, "signature.wrapping"),
    "key-info-elsewhere": (hostile_key_info_elsewhere, "signature.wrapping"),
    "second-signature": (hostile_second_signature, "signature.malformed"),
    "tampered-body": (hostile_tampered_body, "signature.invalid"),
    "tampered-timestamp": (hostile_tampered_timestamp, "signature.invalid"),
    "hmac-signature": (hostile_signature_method(HMAC_SHA256), "signature.algorithm"),
    "rsa-sha1-signature": (hostile_signature_method(RSA_SHA1), "signature.algorithm"),
    "sha1-digest": (hostile_digest_method(SHA1), "signature.algorithm"),
    "without-security": (hostile_without_security, "signature.missing"),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(HOSTILE_CODES))
def test_hostile_envelopes_are_refused(name: str, version: SoapVersion, signer: SigningKey) -> None:
    make, code = HOSTILE_CODES[name]
    signed = sign_envelope(envelope(version), signer)
    verify(signed)  # the original verifies
    error = refused(make(signed))
    assert error.code == code, error.detail
    assert error.path and error.path.startswith("/soap:Envelope")


def test_wrapping_names_where(signer: SigningKey) -> None:
    error = refused(hostile_body_moved_into_header(sign_envelope(envelope(), signer)))
    assert "Wrapper/soap:Body" in error.detail


def test_no_header_at_all_is_missing() -> None:
    bare = (
        f'<soap:Envelope xmlns:soap="{SOAP_ENVELOPE_NS["1.1"]}"><soap:Body>'
        f'<a:Ping xmlns:a="{PAYLOAD_NS}"/></soap:Body></soap:Envelope>'
    ).encode()
    assert refused(bare).code == "signature.missing"
    assert refused(envelope()).code == "signature.missing"


def test_stale_timestamp(signer: SigningKey) -> None:
    signed = sign_envelope(envelope(), signer, now=now() - timedelta(minutes=7))
    error = refused(signed)
    assert error.code == "signature.stale"
    assert error.path is not None and error.path.endswith("wsu:Expires")
    # Within the skew it still passes: expired 2 minutes ago, skew 3 minutes.
    verify(signed, skew_s=180)


def test_created_in_the_future(signer: SigningKey) -> None:
    signed = sign_envelope(envelope(), signer, now=now() + timedelta(minutes=3))
    error = refused(signed)
    assert error.code == "signature.stale"
    assert error.path is not None and error.path.endswith("wsu:Created")
    verify(sign_envelope(envelope(), signer, now=now() + timedelta(seconds=30)))  # within skew


def test_time_to_live_over_five_minutes(signer: SigningKey) -> None:
    signed = sign_envelope(envelope(), signer, ttl_s=301)
    assert refused(signed).code == "signature.stale"
    verify(signed, max_ttl_s=600)


def test_short_rsa_key_is_refused(dev_pki: DevPki, tmp_path: Path) -> None:
    weak, _, _ = rsa_signer(dev_pki, tmp_path, bits=1024)
    error = refused(sign_envelope(envelope(), weak))
    assert error.code == "signature.algorithm"
    assert "1024" in error.detail


def test_p521_key_is_refused(dev_pki: DevPki) -> None:
    ca_key = serialization.load_pem_private_key(dev_pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP521R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "p521")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now() - timedelta(days=1))
        .not_valid_after(now() + timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    assert refused(sign_envelope(envelope(), SigningKey(key, (cert,)))).code == (
        "signature.algorithm"
    )


@needs_xmlsec1
def test_hub_verifies_inclusive_namespaces_from_xmlsec1(
    ec_files: tuple[SigningKey, Path, Path], tmp_path: Path
) -> None:
    """An InclusiveNamespaces PrefixList (as WSS4J writes it) changes the canonical form: the hub
    applies it as xmlsec1 does."""
    signer, _, key = ec_files
    template, out = tmp_path / "template.xml", tmp_path / "out.xml"
    template.write_bytes(
        wssec_template(
            signer.certificate, "1.2", signature_method=ECDSA_SHA256, prefix_list="soap wsse"
        )
    )
    xmlsec1_sign(template, key, out, "1.2")
    verified = verify_envelope(parse_xml(out.read_bytes()), now=now())
    assert 'xmlns:soap="' in verified.signature.evidence["signedInfo"]
    # Read without its PrefixList, the SignedInfo would not verify.
    without = out.read_bytes().replace(b' PrefixList="soap wsse"', b' PrefixList="wsse"')
    assert refused(without).code == "signature.invalid"


def test_not_a_soap_envelope() -> None:
    assert refused(b"<a/>").code == "signature.malformed"


@pytest.mark.parametrize("created", ["2026-01-01T10:00:00", "20260101T100000Z", "2026-01-01"])
def test_timestamp_not_an_xsd_datetime(created: str, signer: SigningKey) -> None:
    root = parse_xml(sign_envelope(envelope(), signer))
    _one(root, ".//wsu:Timestamp/wsu:Created").text = created
    error = refused(_bytes(root))
    assert error.code == "signature.malformed"
    assert error.path is not None and error.path.endswith("wsu:Created")


def test_a_replay_is_one_even_with_the_other_ecdsa_signature(signer: SigningKey) -> None:
    """ECDSA's (r, s) also verifies as (r, n - s): the replay cache's key must not change."""
    signed = sign_envelope(envelope(), signer)
    root = _tree(signed)
    value = _one(root, ".//ds:SignatureValue")
    raw = base64.b64decode(value.text or "")
    half = len(raw) // 2
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256
    s = int.from_bytes(raw[half:], "big")
    value.text = base64.b64encode(raw[:half] + (order - s).to_bytes(half, "big")).decode()
    first = verify_envelope(parse_xml(signed), now=now())
    second = verify_envelope(parse_xml(_bytes(root)), now=now())
    assert first.signature.fingerprint == second.signature.fingerprint


def test_the_replay_cache_keeps_a_signature_as_long_as_it_is_accepted(
    signer: SigningKey,
) -> None:
    created = now()
    checked = verify_envelope(
        parse_xml(sign_envelope(envelope(), signer, now=created)), now=created, skew_s=60
    )
    # Expires (Created + 300 s, to the second) + 60 s of skew.
    lasts = checked.signature.expires_at - created
    assert timedelta(seconds=359) <= lasts <= timedelta(seconds=360), lasts
