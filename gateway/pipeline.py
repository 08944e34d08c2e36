"""The way a message travels, as small typed stages over immutable values.

``InboundMessage`` → :func:`validate` → ``ValidatedMessage`` → :func:`authorise` →
``AuthorisedMessage`` → :func:`to_canonical` → ``CanonicalMessage`` → :func:`route` →
``RoutedExchange`` (mapped out and validated for each receiver) → :func:`seal` → ``Receipt``.

Authorisation runs as soon as the message type is known (after the sender's schema): a type the
sender may not send is refused as such, before any work is spent on it. Who may *receive* it is
checked by the routing configuration, whose targets must each declare they receive the type.

A stage can only be fed what the previous one makes, so the order is checked by the type checker.
Everything here but :func:`seal` is pure: the store is reached through the narrow ``CaseLookup``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from lxml import etree

from gateway import domain, evidence
from gateway.config import PartyRegistry
from gateway.errors import (
    AuthorisationError,
    DomainCheckError,
    DuplicateMessageError,
    MessageTypeMismatchError,
    RoutingError,
    UnsupportedMediaTypeError,
)
from gateway.evidence import HubSigner, Receipt
from gateway.mapping import (
    CANONICAL_NS,
    CANONICAL_SCHEMA,
    CompiledMapping,
    MappingSet,
    PartyFormat,
)
from gateway.signatures import SignatureVerifier
from gateway.signing import VerifiedSignature
from gateway.store import MessageRow, UnitOfWork
from gateway.xml import ParserLimits, SoapVersion, parse_xml, soap_content_type

__all__ = [
    "AuthorisedMessage",
    "CanonicalMessage",
    "InboundMessage",
    "Outgoing",
    "RoutedExchange",
    "ValidatedMessage",
    "authorise",
    "route",
    "seal",
    "to_canonical",
    "validate",
]

_C = f"{{{CANONICAL_NS}}}"
Transport = Literal["rest", "soap11", "soap12"]


@dataclass(frozen=True)
class InboundMessage:
    """What arrived: the authenticated sender and the exact bytes."""

    sender: str
    body: bytes
    content_type: str
    transport: Transport
    trace_id: str
    received_at: str  # RFC 3339, UTC
    signature_header: str | None = None  # REST: the detached JWS (X-JWS-Signature)


@dataclass(frozen=True)
class ValidatedMessage:
    inbound: InboundMessage
    party: PartyFormat
    element: etree._Element  # the party's XML form, valid against its schema
    message_type: str
    schema_sha256: str
    # The sender's verified signature (None only where signatures are not required).
    signature: VerifiedSignature | None = None
    # What makes two sendings the same message: the body's bytes on REST; on SOAP the exclusive
    # C14N of the Body's element, for a resent envelope carries a new Timestamp and signature.
    content_sha256: str = ""


@dataclass(frozen=True)
class CanonicalMessage:
    validated: ValidatedMessage
    element: etree._Element  # valid canonical message, domain-checked
    bytes: bytes
    mapping: CompiledMapping
    schema_sha256: str  # of the canonical XSD file it is valid against
    message_id: str
    message_type: str
    subject: str
    destination: str | None
    correlation_id: str | None
    legal_context: str


@dataclass(frozen=True)
class AuthorisedMessage:
    validated: ValidatedMessage


@dataclass(frozen=True)
class Outgoing:
    receiver: str
    body: bytes
    content_type: str
    mapping: CompiledMapping
    schema_id: str
    schema_sha256: str


@dataclass(frozen=True)
class RoutedExchange:
    canonical: CanonicalMessage
    outgoing: tuple[Outgoing, ...]
    competent_region: str | None  # party id, when the routing decided one

    @property
    def receivers(self) -> tuple[str, ...]:
        return tuple(o.receiver for o in self.outgoing)


class CaseLookup(Protocol):
    def case(self, subject: str) -> tuple[str | None, list[str]] | None: ...
    def sender_of(self, message_id: str) -> str | None: ...


_JSON_TYPES = ("application/json",)
_XML_TYPES = ("application/xml", "text/xml")
_SOAP12_TYPE = "application/soap+xml"  # SOAP 1.2 Part 2 § 7.1.4 (RFC 3902)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def validate(
    inbound: InboundMessage,
    mappings: MappingSet,
    limits: ParserLimits,
    signatures: SignatureVerifier,
) -> ValidatedMessage:
    """Check the sender's signature, parse (hardened) and validate against the sender's schema;
    tell the message type. Only what the signature covers flows on."""
    party = mappings.party(inbound.sender)
    media = _media_type(inbound.content_type)
    if inbound.transport in ("soap11", "soap12"):
        version: SoapVersion = "1.1" if inbound.transport == "soap11" else "1.2"
        if version == "1.1" and media not in _XML_TYPES:
            raise UnsupportedMediaTypeError(f"SOAP 1.1 is text/xml, not {media or 'none'}")
        if version == "1.2" and media != _SOAP12_TYPE:
            raise UnsupportedMediaTypeError(f"SOAP 1.2 is {_SOAP12_TYPE}, not {media or 'none'}")
        envelope = parse_xml(inbound.body, limits)
        element, _header, signature = signatures.soap(inbound.sender, envelope, version)
        # As the signature sees it: exclusive C14N without comments (a comment changes neither).
        content_sha256 = hashlib.sha256(
            etree.tostring(element, method="c14n", exclusive=True, with_comments=False)
        ).hexdigest()
    else:
        expected = _JSON_TYPES if party.format == "json" else _XML_TYPES
        if media not in expected:
            raise UnsupportedMediaTypeError(
                f"{inbound.sender} sends {party.format.upper()} ({expected[0]}),"
                f" not {media or 'none'}"
            )
        # The signature first, over the exact bytes: nothing unsigned is even parsed.
        signature = signatures.rest(inbound.sender, inbound.body, inbound.signature_header)
        element = party.read(inbound.body, limits)
        content_sha256 = hashlib.sha256(inbound.body).hexdigest()
    try:
        schema_file = party.schema.validate(element)
    except Exception as exc:
        if party.binding is not None and getattr(exc, "path", None):
            exc.path = party.binding.pointer(exc.path)  # type: ignore[attr-defined]
        raise
    message_type = party.message_type(element)
    mapping = mappings.mappings.get((inbound.sender, "to-canonical", message_type))
    payload_root = mapping.source_root if mapping is not None else element.tag
    if element.tag != payload_root:  # (no mapping: a type it may not send, authorise() says)
        raise MessageTypeMismatchError(
            f"the message's type code says {message_type}, which is a"
            f" {etree.QName(payload_root).localname}, but the body is a"
            f" {etree.QName(element).localname}",
            path=party.type_xpath.path,
            schema_id=party.schema.schema_id,
        )
    return ValidatedMessage(
        inbound, party, element, message_type, schema_file.sha256, signature, content_sha256
    )


def _text(element: etree._Element, path: str) -> str | None:
    found = element.find(path)
    return found.text if found is not None else None


def to_canonical(authorised: AuthorisedMessage, mappings: MappingSet) -> CanonicalMessage:
    """Map to the canonical model, validate it, and run the domain checks."""
    validated = authorised.validated
    inbound = validated.inbound
    mapping = mappings.get(inbound.sender, "to-canonical", validated.message_type)
    canonical = mapping.apply(
        validated.element,
        {
            "sender": inbound.sender,
            "receiver": "",
            "traceId": inbound.trace_id,
            "receivedAt": inbound.received_at,
        },
    )
    schema_file = mappings.catalog["canonical"].validate(canonical)
    try:
        domain.check_canonical(canonical)
        if mappings.countries is not None:
            domain.check_countries(canonical, mappings.countries.iso_codes)
    except DomainCheckError as exc:
        exc.path, exc.schema_id = _sender_place(exc.path, mapping, mappings.party(inbound.sender))
        raise
    # The envelope is the first child of a valid canonical message: read it in one pass, with
    # its whitespace collapsed as XSD tokens are compared (" SP-1 " is case "SP-1"), and write
    # it back, so that every receiver and the evidence see the same values.
    envelope: dict[str, str] = {}
    for field in canonical[0]:
        field.text = " ".join((field.text or "").split())
        envelope[etree.QName(field).localname] = field.text
    return CanonicalMessage(
        validated=validated,
        element=canonical,
        bytes=etree.tostring(canonical, encoding="UTF-8"),
        mapping=mapping,
        schema_sha256=schema_file.sha256,
        message_id=envelope["id"],
        message_type=envelope["type"],
        subject=envelope["subject"],
        destination=envelope.get("destination"),
        correlation_id=envelope.get("correlationId"),
        legal_context=envelope["legalContext"],
    )


def authorise(validated: ValidatedMessage, parties: PartyRegistry) -> AuthorisedMessage:
    """The sender may send this type (parties.toml ``sends``)."""
    sender = parties[validated.inbound.sender]
    if validated.message_type not in sender.sends:
        raise AuthorisationError(
            f"{sender.id} may not send {validated.message_type}", code="authz.type-not-allowed"
        )
    return AuthorisedMessage(validated)


def _region_of_workplace(
    canonical: CanonicalMessage, parties: PartyRegistry, mappings: MappingSet
) -> str:
    """The party of the region competent for the workplace (``[cases.opened_by]`` says where the
    message gives it, in order of precedence)."""
    opener = parties.openers[canonical.message_type]
    found = opener.postcode(canonical.element)
    if found is None:
        raise RoutingError(
            f"{canonical.message_type} gives no Belgian workplace postcode; looked at "
            + "; ".join(opener.workplace),
            code="routing.no-region",
        )
    postcode, canonical_path = found
    where, schema_id = _sender_place(canonical_path, canonical.mapping, canonical.validated.party)
    try:
        region = mappings.municipalities.region_of(postcode)
    except RoutingError as exc:
        raise RoutingError(exc.detail, code=exc.code, path=where, schema_id=schema_id) from exc
    party = parties.region_party(region)
    if party is None:
        raise RoutingError(
            f"no party handles the {region} region yet",
            code="routing.no-region",
            path=where,
            schema_id=schema_id,
        )
    return party.id


_CANONICAL_ROOT = "/c:message/"
_PREDICATE = re.compile(r"\[[^\]]*\]")


def _sender_place(
    canonical_path: str | None, mapping: CompiledMapping, party: PartyFormat
) -> tuple[str | None, str]:
    """Where a fault found in the canonical message sits in the sender's own body: the path in
    its XML form (a JSON Pointer for a JSON party), with its schema id; the canonical path, with
    the canonical schema id, when no one-to-one rule says where the field came from."""
    # The field, whatever the element's position or the predicate that selected it.
    relative = _PREDICATE.sub("", (canonical_path or "").removeprefix(_CANONICAL_ROOT))
    source = mapping.fields.get(relative)
    if canonical_path is None or source is None:
        return canonical_path, CANONICAL_SCHEMA
    root = etree.QName(mapping.source_root)
    prefix = next((p for p, ns in party.namespaces.items() if ns == root.namespace), None)
    xml_path = f"/{prefix + ':' if prefix else ''}{root.localname}/{source}"
    if party.binding is not None:
        return party.binding.pointer(xml_path), party.schema.schema_id
    return xml_path, party.schema.schema_id


def _envelope_place(canonical: CanonicalMessage, field: str) -> tuple[str | None, str]:
    """Where the sender wrote an envelope field: its path and schema id."""
    return _sender_place(f"c:envelope/c:{field}", canonical.mapping, canonical.validated.party)


def route(
    canonical: CanonicalMessage,
    parties: PartyRegistry,
    mappings: MappingSet,
    cases: CaseLookup,
) -> RoutedExchange:
    """Find the receivers, then map out and validate the message for each.

    A message either opens a case (parties.toml ``[cases.opened_by]``; its competent region is
    computed from the workplace) or belongs to a case the hub knows; one that answers another
    (``correlationId``) answers a message the hub knows; a destination it names must be one of
    the receivers the procedure gives it.
    """
    sender = canonical.validated.inbound.sender
    answered = None
    if canonical.correlation_id:
        answered = cases.sender_of(canonical.correlation_id)
        if answered is None:
            where, schema_id = _envelope_place(canonical, "correlationId")
            raise RoutingError(
                f"correlationId {canonical.correlation_id} names no message known to the hub",
                code="routing.unknown-correlation",
                path=where,
                schema_id=schema_id,
            )
    if canonical.message_type in parties.openers:
        region: str | None = _region_of_workplace(canonical, parties, mappings)
        case_parties: list[str] = []
    else:
        case = cases.case(canonical.subject)
        if case is None:
            raise RoutingError(
                f"case {canonical.subject} is not known to the hub", code="routing.unknown-case"
            )
        region, case_parties = case
    receivers: list[str] = []
    for rule in parties.routes:
        if rule.message_type != canonical.message_type:
            continue
        if rule.when is not None and not rule.when(canonical.element):
            continue
        for target in rule.to:
            if target == "@competent-region":
                found = [region] if region else []
            elif target == "@case-parties":
                found = [p for p in case_parties if canonical.message_type in parties[p].receives]
            elif target == "@correlated-sender":
                found = [answered] if answered else []
            else:
                found = [target]
            receivers.extend(t for t in found if t != sender and t not in receivers)
    if canonical.destination and canonical.destination not in receivers:
        expected = region if canonical.message_type in parties.openers else receivers
        where, schema_id = _envelope_place(canonical, "destination")
        raise RoutingError(
            f"{canonical.destination} does not receive this message here; {expected} does",
            code="routing.destination-mismatch",
            path=where,
            schema_id=schema_id,
            extra={"competent": region} if canonical.message_type in parties.openers else {},
        )
    if not receivers:
        raise RoutingError(f"no party receives {canonical.message_type} here")
    outgoing = tuple(_map_out(canonical, receiver, mappings, parties) for receiver in receivers)
    return RoutedExchange(canonical, outgoing, region)


def _map_out(
    canonical: CanonicalMessage, receiver: str, mappings: MappingSet, parties: PartyRegistry
) -> Outgoing:
    inbound = canonical.validated.inbound
    mapping = mappings.get(receiver, "from-canonical", canonical.message_type)
    party = mappings.party(receiver)
    element = mapping.apply(
        canonical.element,
        {
            "sender": inbound.sender,
            "receiver": receiver,
            "traceId": inbound.trace_id,
            "receivedAt": inbound.received_at,
        },
    )
    schema_file = party.schema.validate(element)
    version = parties[receiver].soap_version
    content_type = soap_content_type(version) if version else party.media_type
    return Outgoing(
        receiver,
        party.write(element),
        content_type,
        mapping,
        party.schema.schema_id,
        schema_file.sha256,
    )


# --- sealing -------------------------------------------------------------------------------------

_INSZ = f".//{_C}insz"


def _mapping_ref(mapping: CompiledMapping) -> list[dict[str, str]]:
    """The files a mapping is made of, by path and SHA-256 (as configuration.loaded has them)."""
    return [{"file": path, "sha256": sha} for path, sha in mapping.files]


def exchange_record(
    routed: RoutedExchange, person_key: bytes
) -> tuple[dict[str, object], dict[str, bytes]]:
    """The evidence record of an accepted exchange, and the payloads it references."""
    canonical = routed.canonical
    validated = canonical.validated
    inbound = validated.inbound
    payloads = {
        evidence.digest(inbound.body): inbound.body,
        evidence.digest(canonical.bytes): canonical.bytes,
    }
    outbound = []
    for out in routed.outgoing:
        sha = evidence.digest(out.body)
        payloads[sha] = out.body
        outbound.append(
            {
                "receiver": out.receiver,
                "sha256": sha,
                "contentType": out.content_type,
                "schema": {"id": out.schema_id, "sha256": out.schema_sha256},
                "mapping": _mapping_ref(out.mapping),
            }
        )
    insz = canonical.element.findtext(_INSZ)
    record = evidence.record(
        "exchange.accepted",
        inbound.received_at,
        messageId=canonical.message_id,
        type=canonical.message_type,
        sender=inbound.sender,
        receivers=list(routed.receivers),
        subject=canonical.subject,
        legalContext=canonical.legal_context,
        traceId=inbound.trace_id,
        correlationId=canonical.correlation_id,
        personRef=evidence.person_ref(person_key, insz) if insz else None,
        inbound={
            "sha256": evidence.digest(inbound.body),
            "contentType": inbound.content_type,
            "transport": inbound.transport,
            "schema": {"id": validated.party.schema.schema_id, "sha256": validated.schema_sha256},
        },
        # Non-repudiation of origin: the sender's signature as verified, with its certificate;
        # an auditor checks it again against the kept inbound body (docs/audit-format.md).
        senderSignature=dict(validated.signature.evidence) if validated.signature else None,
        canonical={
            "sha256": evidence.digest(canonical.bytes),
            "schema": {"id": "canonical", "sha256": canonical.schema_sha256},
            "mapping": _mapping_ref(canonical.mapping),
        },
        outbound=outbound,
    )
    return record, payloads


def seal(
    routed: RoutedExchange, signer: HubSigner, person_key: bytes
) -> Callable[[UnitOfWork], Receipt]:
    """The unit of work that seals an exchange: evidence + message + outbox rows, at once.

    The record and its payloads are computed here, outside the store's writer; the returned
    function only writes.
    """
    canonical = routed.canonical
    inbound = canonical.validated.inbound
    record, payloads = exchange_record(routed, person_key)
    leaf = evidence.Leaf.of(record)  # encoded and hashed here, not in the store's writer
    body_sha = canonical.validated.content_sha256 or evidence.digest(inbound.body)

    def work(unit: UnitOfWork) -> Receipt:
        # The transaction holds the store's write lock (replicas write one at a time): a message
        # id another replica has just sealed is seen here, answered as a duplicate or a conflict.
        existing = unit.message(canonical.message_id)
        if existing is not None:
            if existing.body_sha256 == body_sha and existing.sender == inbound.sender:
                original = Receipt.from_json(json.loads(existing.receipt))
                return dataclasses.replace(original, status="duplicate")
            where, schema_id = _envelope_place(canonical, "id")
            raise DuplicateMessageError(
                f"message id {canonical.message_id} was already used with other content",
                path=where,
                schema_id=schema_id,
            )
        for sha, content in payloads.items():
            unit.put_payload(sha, content)
        row = evidence.append(unit, signer, leaf, inbound.received_at)
        receipt = Receipt(
            message_id=canonical.message_id,
            status="accepted",
            leaf_index=row.leaf_index,
            leaf_hash=row.leaf_hash.hex(),
            time=row.signed_at,
            key_id=row.key_id,
            signature=row.signature,
            receivers=routed.receivers,
        )
        unit.insert_message(
            MessageRow(
                id=canonical.message_id,
                sender=inbound.sender,
                type=canonical.message_type,
                subject=canonical.subject,
                trace_id=inbound.trace_id,
                correlation_id=canonical.correlation_id,
                received_at=inbound.received_at,
                body_sha256=body_sha,
                leaf_index=row.leaf_index,
                receipt=json.dumps(receipt.as_json()),
            )
        )
        for out in routed.outgoing:
            unit.add_delivery(
                canonical.message_id,
                out.receiver,
                evidence.digest(out.body),
                out.content_type,
                inbound.received_at,
            )
        unit.touch_case(
            canonical.subject,
            [inbound.sender, *routed.receivers],
            routed.competent_region,
            inbound.received_at,
        )
        return receipt

    return work


def rejection_record(
    sender: str, body: bytes, trace_id: str, received_at: str, code: str, path: str | None
) -> dict[str, object]:
    """Evidence of a refused message: who, when, why; the body only as its digest."""
    return evidence.record(
        "exchange.rejected",
        received_at,
        sender=sender,
        traceId=trace_id,
        inbound={"sha256": hashlib.sha256(body).hexdigest(), "size": len(body)},
        problem={"code": code, "path": path},
    )
