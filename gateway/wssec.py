"""WS-Security on SOAP: the X.509 token profile as Belgian government services use it.

A signed envelope carries, in its SOAP Header, one ``wsse:Security`` (mustUnderstand="1") with::

    wsu:Timestamp            Created, Expires (at most five minutes apart)
    wsse:BinarySecurityToken the signer's DER certificate (X509v3, Base64Binary)
    ds:Signature             one SignedInfo with exactly three References, by wsu:Id, to the
                             Body, the Timestamp and the BinarySecurityToken; exclusive C14N
                             (without comments) for SignedInfo and as the one transform of each
                             Reference; SHA-256 digests; RSA-SHA256 or ECDSA-SHA256 (r||s);
                             KeyInfo: a SecurityTokenReference to the BinarySecurityToken

both in SOAP 1.1 and SOAP 1.2 envelopes. :func:`sign_envelope` writes one; :func:`verify_envelope`
checks one, strictly, and hands back only what the signature covers (:class:`VerifiedEnvelope`).

Implemented here with lxml's exclusive canonicalisation (libxml2, the same code xmlsec1 relies on)
and ``cryptography``, not with signxml (installed): signxml serialises and re-parses the document
with a parser of its own (every byte that enters the hub goes through ``gateway.xml.parse_xml``),
returns copies, so that "the referenced element is THE Body of this envelope" cannot be checked on
the tree the hub goes on to process, resolves ``#id`` by any attribute whose local name is ``Id``,
and does not read a ``wsse:SecurityTokenReference``. What this profile needs is small and fixed,
so it is written out here, refusing anything else: that is where XML signature wrapping is stopped.

What is checked, in this order (the code of the :class:`~gateway.errors.SignatureError`):

* the shape: one Header, one Security in it, holding one Signature, one Timestamp and one
  BinarySecurityToken and nothing else; one Body, child of the Envelope, holding one element;
  Created and Expires as xsd:dateTime with a time zone, Expires after Created
  (``signature.missing`` without a Security header; ``signature.malformed``; a second Body, a
  second Timestamp or token: ``signature.wrapping``);
* the algorithms (``signature.algorithm``): nothing but those above; RSA keys of 2048 bits or
  more, EC keys on P-256 or P-384;
* the references (``signature.wrapping``): each ``#id`` names exactly one element of the whole
  document (an ``Id`` attribute of any namespace counts, so that no other processor could
  resolve it elsewhere), and the three are THE Body, THE Timestamp and THE token;
* the digests and the signature value (``signature.invalid``);
* the Timestamp (``signature.stale``): Created no later than now + skew, Expires no earlier than
  now − skew, and Expires − Created at most ``max_ttl_s``.

Certificate validation and mapping the signer to a party are not done here (``gateway.trust``);
nor is the replay check (``gateway.signing.ReplayCache``, by :attr:`VerifiedSignature.fingerprint`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from lxml import etree

from gateway.errors import GatewayError, SignatureError
from gateway.signing import MIN_RSA_BITS, SigningKey, VerifiedSignature
from gateway.xml import SOAP_ENVELOPE_NS, parse_xml, soap_version

__all__ = [
    "BASE64_BINARY",
    "DS_NS",
    "ECDSA_SHA256",
    "EXC_C14N",
    "RSA_SHA256",
    "SHA256",
    "WSSE_NS",
    "WSU_NS",
    "X509V3",
    "VerifiedEnvelope",
    "sign_envelope",
    "verify_envelope",
]

WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
BASE64_BINARY = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)

_WSU_ID = f"{{{WSU_NS}}}Id"
_SECURITY = f"{{{WSSE_NS}}}Security"
_BST = f"{{{WSSE_NS}}}BinarySecurityToken"
_STR = f"{{{WSSE_NS}}}SecurityTokenReference"
_TIMESTAMP = f"{{{WSU_NS}}}Timestamp"
_PREFIXES = {WSSE_NS: "wsse", WSU_NS: "wsu", DS_NS: "ds", EXC_C14N: "ec"}
_PREFIXES.update(dict.fromkeys(SOAP_ENVELOPE_NS.values(), "soap"))
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1)
# xsd:dateTime with its time zone (ISO 8601 allows more forms than WS-Security does).
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})")


def _ds(name: str) -> str:
    return f"{{{DS_NS}}}{name}"


@dataclass(frozen=True)
class VerifiedEnvelope:
    """What a verified envelope says: only what its signature covers.

    ``payload`` is the one element of the signed Body, ``header`` the SOAP Header (which holds
    the Security header; other header entries are not signed), ``signature`` what the evidence
    log keeps (format ``wsse``; its certificate not validated yet).
    """

    payload: etree._Element
    header: etree._Element | None
    signature: VerifiedSignature


# ---------------------------------------------------------------------------------------------
# Signing


def sign_envelope(
    envelope: bytes, signer: SigningKey, *, now: datetime | None = None, ttl_s: int = 300
) -> bytes:
    """Sign a serialized SOAP 1.1 or 1.2 envelope (which has no Security header yet).

    A Header is added if missing; the Security header goes first in it. Returns the signed
    envelope, UTF-8 with an XML declaration. Ids are random, so no two signatures are alike.
    """
    if ttl_s <= 0:
        raise ValueError("a signature's time to live is a positive number of seconds")
    root = _with_prefixes(parse_xml(envelope))
    namespace = SOAP_ENVELOPE_NS[soap_version(root)]
    header = root.find(f"{{{namespace}}}Header")
    body = root.find(f"{{{namespace}}}Body")
    if body is None:
        raise ValueError("the envelope has no Body")
    if header is None:
        header = etree.Element(f"{{{namespace}}}Header")
        root.insert(list(root).index(body), header)
    if header.find(_SECURITY) is not None:
        raise ValueError("the envelope already holds a wsse:Security header")

    created = (now or datetime.now(UTC)).astimezone(UTC)
    expires = created + timedelta(seconds=ttl_s)
    body_id = body.get(_WSU_ID) or _new_id("Body")
    body.set(_WSU_ID, body_id)

    security = etree.Element(_SECURITY)
    security.set(f"{{{namespace}}}mustUnderstand", "1")
    header.insert(0, security)
    timestamp = etree.SubElement(security, _TIMESTAMP, {_WSU_ID: _new_id("TS")})
    etree.SubElement(timestamp, f"{{{WSU_NS}}}Created").text = _xsd_datetime(created)
    etree.SubElement(timestamp, f"{{{WSU_NS}}}Expires").text = _xsd_datetime(expires)
    token = etree.SubElement(
        security,
        _BST,
        {"EncodingType": BASE64_BINARY, "ValueType": X509V3, _WSU_ID: _new_id("X509")},
    )
    token.text = base64.b64encode(
        signer.certificate.public_bytes(serialization.Encoding.DER)
    ).decode("ascii")

    is_rsa = isinstance(signer.key, rsa.RSAPrivateKey)
    signature = etree.SubElement(security, _ds("Signature"), {"Id": _new_id("SIG")})
    signed_info = etree.SubElement(signature, _ds("SignedInfo"))
    etree.SubElement(signed_info, _ds("CanonicalizationMethod"), {"Algorithm": EXC_C14N})
    etree.SubElement(
        signed_info, _ds("SignatureMethod"), {"Algorithm": RSA_SHA256 if is_rsa else ECDSA_SHA256}
    )
    for target in (body, timestamp, token):
        reference = etree.SubElement(
            signed_info, _ds("Reference"), {"URI": "#" + target.get(_WSU_ID, "")}
        )
        transforms = etree.SubElement(reference, _ds("Transforms"))
        etree.SubElement(transforms, _ds("Transform"), {"Algorithm": EXC_C14N})
        etree.SubElement(reference, _ds("DigestMethod"), {"Algorithm": SHA256})
        etree.SubElement(reference, _ds("DigestValue")).text = _b64(
            hashlib.sha256(_c14n(target, None)).digest()
        )
    value = etree.SubElement(signature, _ds("SignatureValue"))
    key_info = etree.SubElement(signature, _ds("KeyInfo"))
    reference_to_token = etree.SubElement(
        etree.SubElement(key_info, _STR), f"{{{WSSE_NS}}}Reference"
    )
    reference_to_token.set("URI", "#" + token.get(_WSU_ID, ""))
    reference_to_token.set("ValueType", X509V3)

    octets = _c14n(signed_info, None)
    if isinstance(signer.key, rsa.RSAPrivateKey):
        raw = signer.key.sign(octets, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(signer.key.sign(octets, ec.ECDSA(hashes.SHA256())))
        size = (signer.key.curve.key_size + 7) // 8
        raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    value.text = _b64(raw)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _with_prefixes(root: etree._Element) -> etree._Element:
    """The envelope with ``wsse``, ``wsu`` and ``ds`` declared on it (lxml cannot add a
    declaration to an element: a new root takes over the children)."""
    wanted = {"wsse": WSSE_NS, "wsu": WSU_NS, "ds": DS_NS}
    nsmap: dict[str | None, str] = dict(root.nsmap)
    for prefix, uri in wanted.items():
        if uri not in nsmap.values() and prefix not in nsmap:
            nsmap[prefix] = uri
    if nsmap == root.nsmap:
        return root
    new = etree.Element(root.tag, nsmap=nsmap)  # type: ignore[arg-type]  # None: the default
    for name, value in root.attrib.items():
        new.set(name, value)
    new.text = root.text
    for child in list(root):
        new.append(child)
    return new


def _new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


def _xsd_datetime(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _c14n(element: etree._Element, prefixes: list[str] | None) -> bytes:
    return etree.tostring(
        element,
        method="c14n",
        exclusive=True,
        with_comments=False,
        inclusive_ns_prefixes=prefixes,
    )


# ---------------------------------------------------------------------------------------------
# Verifying


def verify_envelope(
    envelope: etree._Element, *, now: datetime, max_ttl_s: int = 300, skew_s: int = 60
) -> VerifiedEnvelope:
    """Verify the WS-Security signature of an envelope parsed by ``gateway.xml.parse_xml``.

    Raises :class:`SignatureError` (``signature.*``, with ``path`` where the fault is) unless
    the envelope is signed exactly as this module's docstring says. The certificate is not
    validated here.
    """
    try:
        version = soap_version(envelope)
    except GatewayError as exc:
        raise SignatureError(exc.detail, code="signature.malformed", path="/") from exc
    namespace = SOAP_ENVELOPE_NS[version]
    header, body = _envelope_parts(envelope, namespace)
    security = _security_of(header)
    parts = _security_parts(security)
    timestamp, token, signature = (
        parts["Timestamp"],
        parts["BinarySecurityToken"],
        parts["Signature"],
    )
    payload = _payload_of(body)
    created_text, expires_text, created, expires = _timestamp_times(timestamp)

    signed_info, signature_value, key_info = _children(
        signature, [_ds("SignedInfo"), _ds("SignatureValue"), _ds("KeyInfo")]
    )
    children = _elements(signed_info)
    if len(children) < 2:
        raise _malformed("SignedInfo lacks its methods", signed_info)
    c14n_method, signature_method, *references = children
    _expect_tag(c14n_method, _ds("CanonicalizationMethod"))
    _expect_tag(signature_method, _ds("SignatureMethod"))
    signed_info_prefixes = _c14n_prefixes(c14n_method)
    algorithm = signature_method.get("Algorithm")
    if algorithm not in (RSA_SHA256, ECDSA_SHA256):
        raise SignatureError(
            f"signature method {algorithm!r} is not accepted (only RSA-SHA256, ECDSA-SHA256)",
            code="signature.algorithm",
            path=_path(signature_method),
        )
    if _elements(signature_method) or (signature_method.text or "").strip():
        raise _malformed("SignatureMethod takes no parameters", signature_method)

    certificate = _certificate_of(token)
    public_key = certificate.public_key()
    _check_key(public_key, algorithm, token)
    _check_key_info(key_info, token)

    if len(references) != 3:
        raise _malformed(
            f"SignedInfo must hold exactly three References (Body, Timestamp, token), "
            f"it holds {len(references)}",
            signed_info,
        )
    ids = _id_index(envelope)
    expected = {id(body): "Body", id(timestamp): "Timestamp", id(token): "BinarySecurityToken"}
    covered: dict[str, dict[str, str]] = {}
    pending: list[tuple[etree._Element, str, list[str] | None, bytes]] = []
    for reference in references:
        _expect_tag(reference, _ds("Reference"))
        target = _dereference(reference, ids)
        role = expected.get(id(target))
        if role is None:
            raise SignatureError(
                f"{_path(reference)} refers to {_path(target)}, which is not the Body, the "
                "Timestamp or the BinarySecurityToken of the Security header",
                code="signature.wrapping",
                path=_path(reference),
            )
        if role in covered:
            raise SignatureError(
                f"the {role} is referenced twice", code="signature.wrapping", path=_path(reference)
            )
        prefixes, _, digest_value = _reference_parts(reference)
        covered[role] = {"element": role, "uri": reference.get("URI", "")}
        pending.append((target, role, prefixes, digest_value))

    for target, role, prefixes, digest_value in pending:
        actual = hashlib.sha256(_c14n(target, prefixes)).digest()
        if not hmac.compare_digest(actual, digest_value):
            raise SignatureError(
                f"the digest of the {role} ({_path(target)}) does not match its Reference: "
                "it was changed after signing",
                code="signature.invalid",
                path=_path(target),
            )
        covered[role]["digest"] = _b64(digest_value)

    signed_octets = _c14n(signed_info, signed_info_prefixes)
    raw = _base64(signature_value, "SignatureValue")
    _check_signature_value(public_key, raw, signed_octets, signature_value)

    _check_fresh(created, expires, now=now, max_ttl_s=max_ttl_s, skew_s=skew_s, at=timestamp)

    evidence: dict[str, Any] = {
        "format": "wsse",
        "algorithm": algorithm,
        "signatureValue": _b64(raw),
        "signedInfo": signed_octets.decode("utf-8"),
        "certificate": _b64(certificate.public_bytes(serialization.Encoding.DER)),
        "created": created_text,
        "expires": expires_text,
        "references": [covered[role] for role in ("Body", "Timestamp", "BinarySecurityToken")],
    }
    verified = VerifiedSignature(
        format="wsse",
        certificate=certificate,
        chain=(),
        signed_at=created,
        # The replay cache remembers it as long as _check_fresh would accept it.
        expires_at=expires + timedelta(seconds=skew_s),
        # What was signed, not how the signature is encoded: an ECDSA (r, s) also verifies as
        # (r, n - s), and a replay with the other one must still be a replay.
        fingerprint=hashlib.sha256(signed_octets).hexdigest(),
        evidence=evidence,
    )
    return VerifiedEnvelope(payload=payload, header=header, signature=verified)


def _envelope_parts(
    envelope: etree._Element, namespace: str
) -> tuple[etree._Element, etree._Element]:
    headers, bodies = [], []
    for child in _elements(envelope):
        if child.tag == f"{{{namespace}}}Header":
            headers.append(child)
        elif child.tag == f"{{{namespace}}}Body":
            bodies.append(child)
        else:
            raise _malformed(f"unexpected {_name(child)} in the Envelope", child)
    if len(bodies) > 1:
        raise SignatureError(
            f"the Envelope holds {len(bodies)} Bodies; exactly one is signed and processed",
            code="signature.wrapping",
            path=_path(bodies[1]),
        )
    if not bodies:
        raise _malformed("the Envelope has no Body", envelope)
    if not headers:
        raise SignatureError(
            "the envelope has no SOAP Header, so no wsse:Security signature",
            code="signature.missing",
            path=_path(envelope),
        )
    if len(headers) > 1:
        raise _malformed("the Envelope holds more than one Header", headers[1])
    if _elements(envelope).index(headers[0]) > _elements(envelope).index(bodies[0]):
        raise _malformed("the Header comes after the Body", headers[0])
    return headers[0], bodies[0]


def _security_of(header: etree._Element) -> etree._Element:
    found = [child for child in _elements(header) if child.tag == _SECURITY]
    if not found:
        raise SignatureError(
            "the SOAP Header holds no wsse:Security: the message is not signed",
            code="signature.missing",
            path=_path(header),
        )
    if len(found) > 1:
        raise _malformed("the Header holds more than one wsse:Security", found[1])
    return found[0]


def _security_parts(security: etree._Element) -> dict[str, etree._Element]:
    wanted = {_TIMESTAMP: "Timestamp", _BST: "BinarySecurityToken", _ds("Signature"): "Signature"}
    found: dict[str, list[etree._Element]] = {name: [] for name in wanted.values()}
    for child in _elements(security):
        name = wanted.get(child.tag)
        if name is None:
            raise _malformed(f"unexpected {_name(child)} in wsse:Security", child)
        found[name].append(child)
    for name, elements in found.items():
        if not elements:
            raise _malformed(f"wsse:Security holds no {name}", security)
        if len(elements) > 1:
            raise SignatureError(
                f"wsse:Security holds {len(elements)} {name} elements; exactly one is accepted",
                code="signature.malformed" if name == "Signature" else "signature.wrapping",
                path=_path(elements[1]),
            )
    return {name: elements[0] for name, elements in found.items()}


def _payload_of(body: etree._Element) -> etree._Element:
    payload = _elements(body)
    if len(payload) != 1:
        raise _malformed(f"the Body must hold exactly one element, it holds {len(payload)}", body)
    if (body.text or "").strip() or any((c.tail or "").strip() for c in body):
        raise _malformed("the Body holds text besides its element", body)
    return payload[0]


def _reference_parts(
    reference: etree._Element,
) -> tuple[list[str] | None, etree._Element, bytes]:
    transforms, digest_method, digest_value = _children(
        reference, [_ds("Transforms"), _ds("DigestMethod"), _ds("DigestValue")]
    )
    steps = _elements(transforms)
    if len(steps) != 1:
        raise SignatureError(
            f"a Reference takes exactly one transform (exclusive C14N), this one {len(steps)}",
            code="signature.algorithm",
            path=_path(transforms),
        )
    _expect_tag(steps[0], _ds("Transform"))
    prefixes = _c14n_prefixes(steps[0])
    if digest_method.get("Algorithm") != SHA256 or _elements(digest_method):
        raise SignatureError(
            f"digest method {digest_method.get('Algorithm')!r} is not accepted (only SHA-256)",
            code="signature.algorithm",
            path=_path(digest_method),
        )
    digest = _base64(digest_value, "DigestValue")
    if len(digest) != 32:
        raise _malformed("a SHA-256 DigestValue is 32 bytes", digest_value)
    return prefixes, digest_method, digest


def _c14n_prefixes(method: etree._Element) -> list[str] | None:
    """The InclusiveNamespaces PrefixList of an exclusive C14N method, refusing anything else."""
    if method.get("Algorithm") != EXC_C14N:
        raise SignatureError(
            f"{_name(method)} algorithm {method.get('Algorithm')!r} is not accepted "
            f"(only exclusive C14N without comments, {EXC_C14N})",
            code="signature.algorithm",
            path=_path(method),
        )
    parameters = _elements(method)
    if not parameters:
        return None
    if len(parameters) > 1 or parameters[0].tag != f"{{{EXC_C14N}}}InclusiveNamespaces":
        raise _malformed("exclusive C14N takes one InclusiveNamespaces parameter only", method)
    prefix_list = parameters[0].get("PrefixList")
    if prefix_list is None:
        raise _malformed("InclusiveNamespaces without PrefixList", parameters[0])
    return prefix_list.split() or None


def _id_index(envelope: etree._Element) -> dict[str, list[etree._Element]]:
    """Every element by each of its id values: wsu:Id, and any other attribute that some
    processor could take for an id (``Id``/``ID``/``id`` of any namespace, ``xml:id``)."""
    index: dict[str, list[etree._Element]] = {}
    for element in envelope.iter(etree.Element):
        for name, value in element.attrib.items():
            if etree.QName(name).localname in ("Id", "ID", "id"):
                index.setdefault(str(value).strip(), []).append(element)
    return index


def _dereference(reference: etree._Element, ids: dict[str, list[etree._Element]]) -> etree._Element:
    uri = reference.get("URI")
    if uri is None or not uri.startswith("#") or len(uri) < 2 or uri.startswith("#xpointer("):
        raise _malformed(
            f"a Reference URI must be '#<wsu:Id>' of an element of this envelope, not {uri!r}",
            reference,
        )
    targets = ids.get(uri[1:], [])
    if not targets:
        raise _malformed(f"Reference URI {uri} names no element of this envelope", reference)
    distinct = list(dict.fromkeys(targets))
    if len(distinct) > 1:
        raise SignatureError(
            f"Reference URI {uri} names {len(distinct)} elements ("
            + ", ".join(_path(t) for t in distinct)
            + "): an id must be unique in the whole envelope",
            code="signature.wrapping",
            path=_path(distinct[1]),
        )
    target = distinct[0]
    if len(targets) > 1 or target.get(_WSU_ID) != uri[1:]:
        raise SignatureError(
            f"Reference URI {uri} must name its element by a single wsu:Id",
            code="signature.wrapping",
            path=_path(target),
        )
    return target


def _certificate_of(token: etree._Element) -> x509.Certificate:
    if token.get("ValueType") != X509V3:
        raise _malformed(f"the BinarySecurityToken's ValueType must be {X509V3}", token)
    if token.get("EncodingType", BASE64_BINARY) != BASE64_BINARY:
        raise _malformed(f"the BinarySecurityToken's EncodingType must be {BASE64_BINARY}", token)
    if _elements(token):
        raise _malformed("the BinarySecurityToken holds elements", token)
    der = _base64(token, "BinarySecurityToken")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise _malformed(f"the BinarySecurityToken is no DER certificate: {exc}", token) from exc


def _check_key(key: object, algorithm: str, token: etree._Element) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if algorithm != RSA_SHA256:
            raise SignatureError(
                f"an RSA certificate with signature method {algorithm}",
                code="signature.algorithm",
                path=_path(token),
            )
        if key.key_size < MIN_RSA_BITS:
            raise SignatureError(
                f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required",
                code="signature.algorithm",
                path=_path(token),
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if algorithm != ECDSA_SHA256:
            raise SignatureError(
                f"an EC certificate with signature method {algorithm}",
                code="signature.algorithm",
                path=_path(token),
            )
        if not isinstance(key.curve, _EC_CURVES):
            raise SignatureError(
                f"EC curve {key.curve.name} is not accepted (only P-256, P-384)",
                code="signature.algorithm",
                path=_path(token),
            )
    else:
        raise SignatureError(
            f"a {type(key).__name__} certificate: only RSA and EC keys sign messages",
            code="signature.algorithm",
            path=_path(token),
        )


def _check_key_info(key_info: etree._Element, token: etree._Element) -> None:
    (reference_holder,) = _children(key_info, [_STR])
    (reference,) = _children(reference_holder, [f"{{{WSSE_NS}}}Reference"])
    value_type = reference.get("ValueType")
    if value_type is not None and value_type != X509V3:
        raise _malformed(f"the token reference's ValueType must be {X509V3}", reference)
    if reference.get("URI") != "#" + (token.get(_WSU_ID) or "\0"):
        raise SignatureError(
            f"KeyInfo refers to {reference.get('URI')!r}, not to the BinarySecurityToken of the "
            "Security header",
            code="signature.wrapping",
            path=_path(reference),
        )


def _check_signature_value(key: object, raw: bytes, octets: bytes, where: etree._Element) -> None:
    invalid = SignatureError(
        "the SignatureValue does not verify with the BinarySecurityToken's key",
        code="signature.invalid",
        path=_path(where),
    )
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, octets, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            # XML-DSig ECDSA values are r||s, each as long as the curve's order (RFC 4050).
            size = (key.curve.key_size + 7) // 8
            if len(raw) != 2 * size:
                raise invalid
            r, s = int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
            key.verify(encode_dss_signature(r, s), octets, ec.ECDSA(hashes.SHA256()))
        else:  # refused earlier by _check_key
            raise invalid
    except InvalidSignature as exc:
        raise invalid from exc


def _timestamp_times(timestamp: etree._Element) -> tuple[str, str, datetime, datetime]:
    created_el, expires_el = _children(timestamp, [f"{{{WSU_NS}}}Created", f"{{{WSU_NS}}}Expires"])
    texts = [(el.text or "").strip() for el in (created_el, expires_el)]
    times = []
    for el, text in zip((created_el, expires_el), texts, strict=True):
        if not _DATETIME.fullmatch(text):
            raise _malformed(f"{text!r} is no xsd:dateTime with a time zone ('Z' for UTC)", el)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as exc:
            raise _malformed(f"{text!r} is no xsd:dateTime", el) from exc
        times.append(moment.astimezone(UTC))
    if times[1] <= times[0]:
        raise _malformed("the Timestamp expires before it is created", expires_el)
    return texts[0], texts[1], times[0], times[1]


def _check_fresh(
    created: datetime,
    expires: datetime,
    *,
    now: datetime,
    max_ttl_s: int,
    skew_s: int,
    at: etree._Element,
) -> None:
    skew = timedelta(seconds=skew_s)
    if created > now + skew:
        raise SignatureError(
            f"the Timestamp is created in the future ({created.isoformat()}, now "
            f"{now.astimezone(UTC).isoformat()})",
            code="signature.stale",
            path=_path(at) + "/wsu:Created",
        )
    if now > expires + skew:
        raise SignatureError(
            f"the Timestamp expired at {expires.isoformat()} (now "
            f"{now.astimezone(UTC).isoformat()})",
            code="signature.stale",
            path=_path(at) + "/wsu:Expires",
        )
    if (expires - created).total_seconds() > max_ttl_s:
        raise SignatureError(
            f"the Timestamp is valid for {(expires - created).total_seconds():.0f} s, "
            f"at most {max_ttl_s} s are accepted",
            code="signature.stale",
            path=_path(at),
        )


# ---------------------------------------------------------------------------------------------
# Small helpers


def _elements(element: etree._Element) -> list[etree._Element]:
    return [child for child in element if isinstance(child.tag, str)]


def _children(element: etree._Element, tags: list[str]) -> list[etree._Element]:
    """The element children of ``element``, which must be exactly ``tags``, in order."""
    children = _elements(element)
    if [child.tag for child in children] != tags:
        raise _malformed(
            f"{_name(element)} must hold exactly "
            + ", ".join(_clark_name(tag) for tag in tags)
            + ", it holds "
            + (", ".join(_name(child) for child in children) or "nothing"),
            element,
        )
    if (element.text or "").strip() or any((c.tail or "").strip() for c in element):
        raise _malformed(f"{_name(element)} holds text besides its elements", element)
    return children


def _expect_tag(element: etree._Element, tag: str) -> None:
    if element.tag != tag:
        raise _malformed(f"{_clark_name(tag)} expected, found {_name(element)}", element)


def _base64(element: etree._Element, what: str) -> bytes:
    text = "".join((element.text or "").split())
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _malformed(f"the {what} is not Base64", element) from exc
    if not data:
        raise _malformed(f"the {what} is empty", element)
    return data


def _malformed(detail: str, where: etree._Element) -> SignatureError:
    return SignatureError(detail, code="signature.malformed", path=_path(where))


def _clark_name(tag: str) -> str:
    qname = etree.QName(tag)
    prefix = _PREFIXES.get(qname.namespace or "")
    return f"{prefix}:{qname.localname}" if prefix else qname.localname


def _name(element: etree._Element) -> str:
    return _clark_name(element.tag) if isinstance(element.tag, str) else "a node"


def _path(element: etree._Element) -> str:
    """An XPath-ish location: ``/soap:Envelope/soap:Header/wsse:Security/ds:Signature[2]``."""
    steps = []
    node: etree._Element | None = element
    while node is not None:
        parent = node.getparent()
        step = _name(node)
        if parent is not None:
            same = [c for c in parent if c.tag == node.tag]
            if len(same) > 1:
                step += f"[{same.index(node) + 1}]"
        steps.append(step)
        node = parent
    return "/" + "/".join(reversed(steps))
