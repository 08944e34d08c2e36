"""``guichet party new``: a new party that works end to end, for an integrator to reshape.

From the canonical model and the types the party sends and receives, it writes
(docs/adding-a-party.md walks through every file)::

    schemas/<id>/<id>.xsd                  a header + a copy of each canonical payload, in the
                                           party's own namespace urn:be:guichet:party:<id>:1
    schemas/<id>/<id>-backoffice.wsdl      SOAP: the party's service, one operation per type it
                                           receives, answered by an acknowledgement
    schemas/<id>/<id>-hub.wsdl             SOAP: the hub's endpoint as the party calls it, one
                                           operation per type it sends, answered by a receipt
    mappings/<id>/party.toml, codelists.toml, to-canonical/, from-canonical/, golden pairs
    examples/<id>/<type>.(json|xml)        one per type it sends (SOAP: whole envelopes)
    parties.toml                           + [parties.<id>]   (appended; --route: routes too)
    examples/sandbox.toml                  + [office.<id>]    (appended)

The shapes of the starter schema:

- JSON: one global element ``message`` = ``header`` + one payload element (a choice, one per
  type), local elements unqualified, no attributes — what a JSON binding needs
  (docs/mappings.md); ``message`` is the ``root`` of party.toml.
- XML, REST or SOAP: one global element per type, ``<payload>Message`` = ``header`` + the
  payload element, every element qualified, attributes copied. SOAP document/literal dispatches
  on the Body's element, so each type needs one of its own; a REST/XML party gets the same
  schema, so changing protocol never changes the format.

Every payload is copied from the canonical components (xmlschema) element by element, named
types as named types, and the mapping rules are generated from the same components, one rule per
field, so both directions are an identity the integrator then bends to the real format. The
golden pairs and examples are made by running the compiled mappings on canonical instances found
in the golden pairs of the other parties (and tests/corpus/canonical/valid/ when present).

Nothing is written before everything has been made and checked in a staging copy of the home,
as the hub will load it: the mapping loader's checks, every golden pair, every example through
the stages of ``guichet validate``, parties.toml, the WSDLs and the sandbox office.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import socket
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lxml import etree

from gateway.codelists import REGIONS
from gateway.config import load_parties
from gateway.domain import is_valid_enterprise_number
from gateway.errors import ConfigurationError, GatewayError
from gateway.mapping import GOLDEN_PARAMS, Direction, MappingSet, check_golden
from gateway.namespaces import CANONICAL_NS, HUB_NS, SOAP11_NS
from gateway.schemas import Schema, SchemaCatalog
from gateway.xml import parse_xml

__all__ = ["PROTOCOLS", "ROLES", "PartySpec", "Scaffolded", "scaffold_party", "soap12_supported"]

PROTOCOLS = ("rest", "soap11", "soap12")
FORMATS = ("json", "xml")
ROLES = ("portal", "region", "federal", "municipality")
PARTY_ID = re.compile(r"[a-z]{2}(-[a-z0-9]+)+")
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
HUB_PORT = 8443  # the hub's default port: never given to a back office

_XS = "http://www.w3.org/2001/XMLSchema"
_WSDL = "http://schemas.xmlsoap.org/wsdl/"
_WSDL_SOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"
_WSDL_SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
_HTTP_TRANSPORT = "http://schemas.xmlsoap.org/soap/http"
_C = f"{{{CANONICAL_NS}}}"
_FACETS = {
    f"{{{_XS}}}{name}"
    for name in (
        "enumeration",
        "pattern",
        "length",
        "minLength",
        "maxLength",
        "minInclusive",
        "maxInclusive",
        "minExclusive",
        "maxExclusive",
        "totalDigits",
        "fractionDigits",
        "whiteSpace",
    )
}
_RESERVED_PREFIXES = {"c", "h", "p", "xs", "xsl", "xsi", "soap", "wsdl", "tns", "hub"}
# The header: (party element, canonical envelope element). Optional fields the sandbox writes
# when it answers (inReplyTo) come last: a missing element is appended as its parent's last child.
_HEADER = (
    ("messageId", "id"),
    ("messageType", "type"),
    ("sentAt", "time"),
    ("sender", "source"),
    ("recipient", "destination"),
    ("caseReference", "subject"),
    ("legalBasis", "legalContext"),
    ("inReplyTo", "correlationId"),
)
_NOT_IN_HEADER = {"schemaVersion", "traceId"}  # a constant, and the BelGov-Trace-Id header
_OPTIONAL_IN_HEADER = {"sender", "recipient"}  # the hub knows both from the connection
_SENDER, _RECIPIENT = "sender", "recipient"
TYPE_CODES = "messageTypes"  # the code list of the type codes (party.toml [message_type])
_SCAFFOLDED = "Scaffolded by `guichet party new`; docs/adding-a-party.md says how to reshape it."

Rule = dict[str, Any]


@dataclass(frozen=True)
class PartySpec:
    """What ``guichet party new`` is asked for."""

    party_id: str
    protocol: str  # rest | soap11 | soap12
    format: str  # json | xml
    name: str | None = None  # the same in nl, fr, de and en until the integrator translates it
    enterprise_number: str | None = None  # KBO/BCE; default: a valid one derived from the id
    sends: tuple[str, ...] = ()
    receives: tuple[str, ...] = ()
    role: str | None = None  # default: region with --region, else federal
    region: str | None = None
    route: bool = False  # add the party to the routes of the types it receives


@dataclass(frozen=True)
class Scaffolded:
    """What was written."""

    party_id: str
    endpoint: str
    enterprise_number: str
    created: tuple[Path, ...]
    appended: tuple[Path, ...]
    routes: tuple[str, ...] = ()  # what --route did, one line per type


def soap12_supported() -> bool:
    """Whether the hub delivers over SOAP 1.2: an adapter is registered under that name."""
    from adapters import load_adapter

    try:
        load_adapter("soap12")
    except LookupError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Names


def payload_name(message_type: str) -> str:
    """``workAuthorisation.decided`` → ``workAuthorisationDecided`` (the canonical payload)."""
    first, *rest = message_type.split(".")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def type_code(message_type: str) -> str:
    """``workAuthorisation.decided`` → ``WORK_AUTHORISATION_DECIDED``."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", message_type.replace(".", "_"))
    return words.upper()


def _pascal(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text))


def _lower_camel(text: str) -> str:
    return text[:1].lower() + text[1:]


def _prefix(party_id: str) -> str:
    last = party_id.rsplit("-", 1)[-1]
    fits = re.fullmatch(r"[a-z][a-z0-9]{0,9}", last) and not last.startswith("xml")
    return last if fits and last not in _RESERVED_PREFIXES else "party"


def _toml(value: str) -> str:
    # A JSON string is a TOML basic string (same escapes).
    return json.dumps(value, ensure_ascii=False)


def _join(base: str, step: str) -> str:
    return step if base in ("", ".") else f"{base}/{step}"


def _repeated(decl: Any) -> bool:
    return bool(decl.max_occurs is None or decl.max_occurs > 1)


def _documentation(component: Any) -> str:
    annotation = getattr(component, "annotation", None)
    if annotation is None:
        return ""
    texts = (" ".join((d.text or "").split()) for d in annotation.documentation)
    return " ".join(t for t in texts if t)


# ---------------------------------------------------------------------------------------------
# The canonical model


@dataclass(frozen=True)
class _Canonical:
    schema: Schema
    message: Any  # c:message
    envelope: Any  # c:envelope
    payloads: dict[str, Any]  # message type → payload element declaration
    catalogue: tuple[str, ...]  # every message type, in the canonical enumeration's order
    version: str

    @classmethod
    def of(cls, schema: Schema) -> _Canonical:
        message = schema.element(f"{_C}message")
        elements = {e.local_name: e for e in message.type.content.iter_elements()}
        envelope = elements.pop("envelope")
        type_decl = next(e for e in envelope.type.content.iter_elements() if e.local_name == "type")
        catalogue = tuple(str(v) for v in type_decl.type.enumeration or ())
        payloads = {t: elements[payload_name(t)] for t in catalogue if payload_name(t) in elements}
        version = str(next(iter(schema.files.values())).components.version or "1.0")
        return cls(schema, message, envelope, payloads, catalogue, version)

    def envelope_fields(self) -> list[Any]:
        return list(self.envelope.type.content.iter_elements())


# ---------------------------------------------------------------------------------------------
# The starter schema


class _SchemaWriter:
    """Copies canonical components into the party's namespace, named types as named types."""

    def __init__(self, prefix: str, namespace: str, json_format: bool) -> None:
        self.prefix = prefix
        self.namespace = namespace
        self.json = json_format
        self.definitions: list[etree._Element | None] = []
        self.names: dict[str, str] = {}  # canonical type (Clark) → party type name
        self.taken: set[str] = set()

    def xs(self, tag: str, parent: etree._Element | None = None, **attrs: str) -> etree._Element:
        if parent is None:
            return etree.Element(f"{{{_XS}}}{tag}", attrs)
        return etree.SubElement(parent, f"{{{_XS}}}{tag}", attrs)

    def reserve(self, name: str) -> str:
        unique, n = name, 2
        while unique in self.taken:
            unique, n = f"{name}{n}", n + 1
        self.taken.add(unique)
        return unique

    def document(self, parent: etree._Element, text: str) -> None:
        if text:
            annotation = self.xs("annotation", parent)
            self.xs("documentation", annotation).text = text

    def type_ref(self, xsd_type: Any) -> str | None:
        """The QName of a named type (emitted on first use); None for an anonymous one."""
        name = xsd_type.name
        if name is None:
            return None
        qname = etree.QName(name)
        if qname.namespace == _XS:
            return f"xs:{qname.localname}"
        if name not in self.names:
            self.names[name] = self.reserve(qname.localname)
            index = len(self.definitions)
            self.definitions.append(None)  # keeps the order of first use, outer types first
            local = self.names[name]
            self.definitions[index] = (
                self.simple_type(xsd_type, local)
                if xsd_type.is_simple()
                else self.complex_type(xsd_type, local)
            )
        return f"{self.prefix}:{self.names[name]}"

    def simple_type(self, xsd_type: Any, name: str | None) -> etree._Element:
        simple = self.xs("simpleType", name=name) if name else self.xs("simpleType")
        self.document(simple, _documentation(xsd_type))
        source = getattr(xsd_type, "elem", None)
        base = getattr(xsd_type, "base_type", None)
        if source is None or source.tag != f"{{{_XS}}}restriction" or base is None:
            # A list or union: copied as a string, for the integrator to restrict.
            simple.append(etree.Comment(" a list or union type in the canonical model "))
            self.xs("restriction", simple, base="xs:string")
            return simple
        restriction = self.xs("restriction", simple, base=self.type_ref(base) or "xs:string")
        for facet in source:
            if facet.tag in _FACETS:
                self.xs(etree.QName(facet.tag).localname, restriction, **dict(facet.attrib))
        return simple

    def complex_type(self, xsd_type: Any, name: str | None) -> etree._Element:
        complex_type = self.xs("complexType", name=name) if name else self.xs("complexType")
        self.document(complex_type, _documentation(xsd_type))
        if xsd_type.has_simple_content():  # XML only: JSON elements take the simple type
            content = self.xs("simpleContent", complex_type)
            base = self.type_ref(xsd_type.content) or "xs:string"
            self.attributes(self.xs("extension", content, base=base), xsd_type)
            return complex_type
        self.group(complex_type, xsd_type.content)
        if not self.json:
            self.attributes(complex_type, xsd_type)
        return complex_type

    def group(self, parent: etree._Element, group: Any) -> None:
        model = self.xs(group.model, parent)
        _occurs(model, group)
        for particle in group:
            if hasattr(particle, "model"):
                self.group(model, particle)
            elif hasattr(particle, "type"):
                model.append(self.element(particle))
            elif particle.min_occurs:
                raise ConfigurationError(
                    f"the canonical model requires a wildcard in {parent.get('name')}: the"
                    " scaffold copies elements only"
                )

    def attributes(self, parent: etree._Element, xsd_type: Any) -> None:
        for name, attribute in xsd_type.attributes.items():
            if name is None:  # an attribute wildcard
                continue
            attrs = {"name": etree.QName(name).localname}
            attrs["type"] = self.type_ref(attribute.type) or "xs:string"
            for key in ("use", "fixed", "default"):
                value = getattr(attribute, key, None)
                if value is not None and not (key == "use" and value == "optional"):
                    attrs[key] = str(value)
            self.xs("attribute", parent, **attrs)

    def element(self, decl: Any) -> etree._Element:
        element = self.xs("element", name=decl.local_name)
        xsd_type = decl.type
        if self.json and not xsd_type.is_simple() and xsd_type.has_simple_content():
            xsd_type = xsd_type.content  # JSON has no attributes: the value alone
        ref = self.type_ref(xsd_type)
        if ref is not None:
            element.set("type", ref)
        _occurs(element, decl)
        self.document(element, _documentation(decl))
        if ref is None:
            inline = (
                self.simple_type(xsd_type, None)
                if xsd_type.is_simple()
                else self.complex_type(xsd_type, None)
            )
            element.append(inline)
        return element


def _occurs(element: etree._Element, particle: Any) -> None:
    if particle.min_occurs != 1:
        element.set("minOccurs", str(particle.min_occurs))
    if particle.max_occurs is None:
        element.set("maxOccurs", "unbounded")
    elif particle.max_occurs != 1:
        element.set("maxOccurs", str(particle.max_occurs))


def _check_shape(decl: Any, json_format: bool, trail: str = "") -> None:
    """Refuse what declarative rules cannot carry: repeated groups, or (JSON) a required
    attribute without a fixed value."""
    where = _join(trail, decl.local_name)
    xsd_type = decl.type
    if xsd_type.is_simple():
        return
    if json_format:
        for name, attribute in xsd_type.attributes.items():
            if name is not None and attribute.use == "required" and attribute.fixed is None:
                raise ConfigurationError(
                    f"canonical {where}/@{etree.QName(name).localname} is a required attribute:"
                    " a JSON party cannot carry it; scaffold this party as XML"
                )
    if xsd_type.has_simple_content():
        return
    pending = [xsd_type.content]
    while pending:
        group = pending.pop()
        for particle in group:
            if hasattr(particle, "model"):
                if _repeated(particle):
                    raise ConfigurationError(
                        f"canonical {where} repeats a group: the scaffold maps repeated elements"
                        " only"
                    )
                pending.append(particle)
    for child in xsd_type.content.iter_elements():
        _check_shape(child, json_format, where)


@dataclass
class _Party:
    """The party being made: its names, shape, and what its mappings and code lists hold."""

    spec: PartySpec
    canonical: _Canonical
    prefix: str
    namespace: str
    codelists: dict[str, list[str]] = field(default_factory=dict)
    codelist_of: dict[str, str] = field(default_factory=dict)  # canonical type → code list
    codelist_notes: dict[str, str] = field(default_factory=dict)

    @property
    def json(self) -> bool:
        return self.spec.format == "json"

    @property
    def soap(self) -> bool:
        return self.spec.protocol.startswith("soap")

    @property
    def types(self) -> list[str]:
        wanted = set(self.spec.sends) | set(self.spec.receives)
        return [t for t in self.canonical.catalogue if t in wanted]

    def step(self, local: str) -> str:
        """A party path step: unqualified for JSON, prefixed for XML."""
        return local if self.json else f"{self.prefix}:{local}"

    def clark(self, local: str) -> str:
        """The Clark name of one of the party's elements (JSON: unqualified)."""
        return local if self.json else f"{{{self.namespace}}}{local}"

    def root(self, message_type: str) -> str:
        """The party's global element that carries ``message_type``."""
        if self.json:
            return f"{self.prefix}:message"
        return f"{self.prefix}:{payload_name(message_type)}Message"

    # the schema ---------------------------------------------------------------------------------
    def schema_text(self) -> str:
        writer = _SchemaWriter(self.prefix, self.namespace, self.json)
        for own in ("Message", "Header", "MessageTypeCode", "Acknowledgement"):
            writer.reserve(own)
        root = etree.Element(
            f"{{{_XS}}}schema",
            nsmap={"xs": _XS, self.prefix: self.namespace},
            targetNamespace=self.namespace,
            elementFormDefault="unqualified" if self.json else "qualified",
            attributeFormDefault="unqualified",
            version="1.0",
        )
        writer.document(
            root,
            f"Messages between {self.spec.party_id} and the Guichet hub. Sends: "
            f"{', '.join(self.spec.sends) or 'nothing'}; receives: "
            f"{', '.join(self.spec.receives) or 'nothing'}.",
        )
        payloads = {t: self.canonical.payloads[t] for t in self.types}
        if self.json:
            message = writer.xs("element", root, name="message", type=f"{self.prefix}:Message")
            writer.document(message, "The JSON object of every message is this element's content.")
            message_type = writer.xs("complexType", name="Message")
            sequence = writer.xs("sequence", message_type)
            writer.xs("element", sequence, name="header", type=f"{self.prefix}:Header")
            choice = writer.xs("choice", sequence)
            for decl in payloads.values():
                choice.append(writer.element(decl))
            root.append(message_type)
        else:
            for message_type_name, decl in payloads.items():
                element = writer.xs("element", root, name=f"{decl.local_name}Message")
                writer.document(element, f"Message of type {message_type_name}.")
                sequence = writer.xs("sequence", writer.xs("complexType", element))
                writer.xs("element", sequence, name="header", type=f"{self.prefix}:Header")
                sequence.append(writer.element(decl))
        fields = {e.local_name: e for e in self.canonical.envelope_fields()}
        if self.soap:
            ack = writer.xs("element", root, name="acknowledgement")
            writer.document(ack, "What the back office answers when the hub delivers a message.")
            ack_sequence = writer.xs("sequence", writer.xs("complexType", ack))
            uuid_type = writer.type_ref(fields["id"].type) or "xs:string"
            writer.xs("element", ack_sequence, name="messageId", type=uuid_type)
            writer.xs("element", ack_sequence, name="receivedAt", type="xs:dateTime")
        header = writer.xs("complexType", name="Header")
        writer.document(
            header, "Every message's header; the hub maps it to the canonical envelope."
        )
        header_sequence = writer.xs("sequence", header)
        for party_name, decl in self.header_fields():
            element = writer.xs("element", header_sequence, name=party_name)
            if decl.local_name == "type":
                element.set("type", f"{self.prefix}:MessageTypeCode")
            else:
                element.set("type", writer.type_ref(decl.type) or "xs:string")
            if party_name in _OPTIONAL_IN_HEADER or decl.min_occurs == 0:
                element.set("minOccurs", "0")
            writer.document(element, _documentation(decl))
        root.append(header)
        codes = writer.xs("simpleType", name="MessageTypeCode")
        writer.document(codes, f"The type codes (code list [{TYPE_CODES}] of codelists.toml).")
        restriction = writer.xs("restriction", codes, base="xs:string")
        for message_type_name in self.canonical.catalogue:
            writer.xs("enumeration", restriction, value=type_code(message_type_name))
        root.append(codes)
        for definition in writer.definitions:
            if definition is not None:
                root.append(definition)
        etree.indent(root, space="  ")
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<!--\n  {self.spec.party_id}: {self.display_name}. {self.protocol_text}.\n"
            f"  {self.shape_text}\n  {_SCAFFOLDED}\n-->\n"
            + etree.tostring(root, encoding="unicode")
            + "\n"
        )

    @property
    def display_name(self) -> str:
        return self.spec.name or self.spec.party_id

    @property
    def protocol_text(self) -> str:
        protocol = {"rest": "REST", "soap11": "SOAP 1.1", "soap12": "SOAP 1.2"}[self.spec.protocol]
        return f"{protocol}, {self.spec.format.upper()} bodies"

    @property
    def shape_text(self) -> str:
        if self.json:
            return (
                'The JSON object is the content of the global element "message": a header and'
                " one payload;\n  local elements are unqualified, elements with maxOccurs > 1"
                " are JSON arrays, no attributes."
            )
        return (
            "One global element per message type (<payload>Message): a header and the payload;"
            "\n  for SOAP each is the first child of soap:Body."
        )

    def header_fields(self) -> list[tuple[str, Any]]:
        """(party element, canonical envelope declaration) in the header's order; an envelope
        field this scaffold does not know is copied under its own name, before inReplyTo."""
        fields = {e.local_name: e for e in self.canonical.envelope_fields()}
        known = {canonical for _, canonical in _HEADER}
        extra = [
            (name, decl)
            for name, decl in fields.items()
            if name not in known and name not in _NOT_IN_HEADER
        ]
        ordered = [(p, fields[c]) for p, c in _HEADER[:-1] if c in fields]
        ordered.extend(extra)
        last_party, last_canonical = _HEADER[-1]
        if last_canonical in fields:
            ordered.append((last_party, fields[last_canonical]))
        return ordered

    # mappings -----------------------------------------------------------------------------------
    def envelope_rules(self, direction: Direction) -> list[Rule]:
        rules: list[Rule] = []
        header = self.step("header")
        for party_name, decl in self.header_fields():
            party_path = f"{header}/{self.step(party_name)}"
            canonical_path = f"c:envelope/c:{decl.local_name}"
            if direction == "to-canonical":
                if party_name == _SENDER:
                    continue  # c:source is the authenticated sender, never the body's word
                rule: Rule = {"to": canonical_path, "from": party_path}
            else:
                source = "$receiver" if party_name == _RECIPIENT else canonical_path
                rule = {"to": party_path, "from": source}
            if decl.local_name == "type":
                rule["codelist"] = TYPE_CODES
            rules.append(rule)
        if direction == "to-canonical":
            fields = {e.local_name for e in self.canonical.envelope_fields()}
            if "source" in fields:
                rules.append({"to": "c:envelope/c:source", "from": "$sender"})
            if "schemaVersion" in fields:
                rules.append({"to": "c:envelope/c:schemaVersion", "value": self.canonical.version})
            if "traceId" in fields:
                rules.append({"to": "c:envelope/c:traceId", "from": "$traceId"})
            order = [e.local_name for e in self.canonical.envelope_fields()]
            rules.sort(key=lambda r: order.index(r["to"].split(":")[-1]))
        return rules

    def payload_rules(self, message_type: str, direction: Direction) -> list[Rule]:
        decl = self.canonical.payloads[message_type]
        return self.rules(decl, f"c:{decl.local_name}", self.step(decl.local_name), direction)

    def rules(self, decl: Any, canonical: str, party: str, direction: Direction) -> list[Rule]:
        xsd_type = decl.type
        rules: list[Rule] = []
        if xsd_type.is_simple() or xsd_type.has_simple_content():
            rules.append(self.leaf(decl, canonical, party, direction))
        else:
            for child in xsd_type.content.iter_elements():
                canonical_child = _join(canonical, f"c:{child.local_name}")
                party_child = _join(party, self.step(child.local_name))
                if _repeated(child):
                    source, target = (
                        (canonical_child, party_child)
                        if direction == "from-canonical"
                        else (party_child, canonical_child)
                    )
                    nested = self.rules(child, ".", ".", direction)
                    rules.append({"to": target, "each": source, "map": nested})
                else:
                    rules.extend(self.rules(child, canonical_child, party_child, direction))
        if not xsd_type.is_simple():
            rules.extend(self.attribute_rules(decl, canonical, party, direction))
        return rules

    def leaf(self, decl: Any, canonical: str, party: str, direction: Direction) -> Rule:
        source, target = (canonical, party) if direction == "from-canonical" else (party, canonical)
        rule: Rule = {"to": target, "from": source}
        simple = decl.type if decl.type.is_simple() else decl.type.content
        values = getattr(simple, "enumeration", None)
        if values:
            rule["codelist"] = self.codelist(simple, decl.local_name, values, canonical)
        return rule

    def attribute_rules(
        self, decl: Any, canonical: str, party: str, direction: Direction
    ) -> list[Rule]:
        rules: list[Rule] = []
        for name, attribute in decl.type.attributes.items():
            if name is None:
                continue
            local = f"@{etree.QName(name).localname}"
            if self.json:
                # JSON carries no attributes: a required one has a fixed value (_check_shape).
                if direction == "to-canonical" and attribute.use == "required":
                    rules.append({"to": _join(canonical, local), "value": str(attribute.fixed)})
                continue
            source, target = (
                (_join(canonical, local), _join(party, local))
                if direction == "from-canonical"
                else (_join(party, local), _join(canonical, local))
            )
            rule: Rule = {"to": target, "from": source}
            values = getattr(attribute.type, "enumeration", None)
            if values:
                rule["codelist"] = self.codelist(
                    attribute.type, local[1:], values, _join(canonical, local)
                )
            rules.append(rule)
        return rules

    def codelist(self, simple: Any, element: str, values: Iterable[Any], where: str) -> str:
        """An identity code list for a canonical enumeration, one per canonical type."""
        key = simple.name or f"{where}#{element}"
        if key not in self.codelist_of:
            base = (
                _lower_camel(etree.QName(simple.name).localname)
                if simple.name
                else f"{element}Codes"
            )
            name, n = base, 2
            while name in self.codelists or name == TYPE_CODES:
                name, n = f"{base}{n}", n + 1
            self.codelist_of[key] = name
            self.codelists[name] = [str(v) for v in values]
            self.codelist_notes[name] = where.replace("c:", "")
        return self.codelist_of[key]

    def mapping_text(self, message_type: str, direction: Direction) -> str:
        root = self.root(message_type)
        source, target = (root, "c:message") if direction == "to-canonical" else ("c:message", root)
        party_id = self.spec.party_id
        way = (
            f"{party_id} → canonical" if direction == "to-canonical" else f"canonical → {party_id}"
        )
        lines = [
            f"# {way}, {message_type}: one rule per field of the canonical payload.",
            f"# {_SCAFFOLDED}",
            f"type = {_toml(message_type)}",
            f"source_root = {_toml(source)}",
            f"target_root = {_toml(target)}",
            'include = ["_envelope.toml"]',
        ]
        lines.extend(_rules_toml(self.payload_rules(message_type, direction)))
        return "\n".join(lines) + "\n"

    def envelope_text(self, direction: Direction) -> str:
        if direction == "to-canonical":
            comment = [
                f"# {self.spec.party_id} header → canonical envelope (every message it sends).",
                "# c:source is the authenticated sender ($sender), never a value of the body;"
                " c:traceId is",
                "# the request's BelGov-Trace-Id ($traceId).",
            ]
        else:
            comment = [
                f"# Canonical envelope → {self.spec.party_id} header (every message it receives).",
                f"# {self.step('recipient')} is the party itself ($receiver); the trace id"
                " travels in the BelGov-Trace-Id header.",
            ]
        return "\n".join([*comment, *_rules_toml(self.envelope_rules(direction))]) + "\n"

    def codelists_text(self) -> str:
        lines = [
            f"# {self.spec.party_id} code values (left) ⇄ canonical code values (right).",
            "# Scaffolded as identities: replace each left-hand side by the party's own code"
            " (and the",
            f"# same value in schemas/{self.spec.party_id}/{self.spec.party_id}.xsd).",
            "",
            f"[{TYPE_CODES}]  # header/messageType ⇄ c:envelope/c:type (every type of the"
            " catalogue)",
        ]
        lines.extend(f"{_toml(type_code(t))} = {_toml(t)}" for t in self.canonical.catalogue)
        for name, values in self.codelists.items():
            lines.extend(["", f"[{name}]  # {self.codelist_notes[name]}"])
            lines.extend(f"{_toml(v)} = {_toml(v)}" for v in values)
        return "\n".join(lines) + "\n"

    def party_toml(self) -> str:
        party_id = self.spec.party_id
        header = self.step("header")
        lines = [
            f"# {party_id}: {self.display_name}. {self.protocol_text}"
            f" ({party_id}.xsd). {_SCAFFOLDED}",
        ]
        if self.soap:
            lines.append("# The mappings work on the payload: the first child of soap:Body.")
        lines += [
            f"party = {_toml(party_id)}",
            f"schema = {_toml(party_id)}",
            f"format = {_toml(self.spec.format)}",
        ]
        if self.json:
            lines.append(f"root = {_toml(self.prefix + ':message')}")
        lines += [
            "",
            "[namespaces]",
            f"{self.prefix} = {_toml(self.namespace)}",
            "",
            "# The type code in the header, looked up in the code list of codelists.toml"
            " (context node:",
            "# the root element of the message's XML form).",
            "[message_type]",
            f"xpath = {_toml(f'string({header}/' + self.step('messageType') + ')')}",
            f"codelist = {_toml(TYPE_CODES)}",
        ]
        return "\n".join(lines) + "\n"


def _rules_toml(rules: Sequence[Rule], depth: int = 1) -> list[str]:
    lines: list[str] = []
    indent = "  " * (depth - 1)
    header = "[[" + ".".join(["map"] * depth) + "]]"
    for rule in rules:
        if depth == 1:
            lines.append("")
        lines.append(f"{indent}{header}")
        keys = ("to", "from", "value", "each", "codelist")
        lines.extend(f"{indent}{key} = {_toml(rule[key])}" for key in keys if key in rule)
        if "map" in rule:
            lines.extend(_rules_toml(rule["map"], depth + 1))
    return lines


# ---------------------------------------------------------------------------------------------
# WSDLs


def _wsdl(party: _Party, side: Literal["backoffice", "hub"]) -> str:
    """The party's own service (operations for what it receives) or the hub's endpoint as the
    party calls it (operations for what it sends), document/literal, modelled on be-fed-ibz."""
    spec = party.spec
    soap_ns = _WSDL_SOAP12 if spec.protocol == "soap12" else _WSDL_SOAP11
    version = "12" if spec.protocol == "soap12" else "11"
    target = f"{party.namespace}:{side}"
    nsmap = {
        "wsdl": _WSDL,
        "soap": soap_ns,  # "soap:" also for SOAP 1.2: the hub rewrites <soap:address> as it is
        "xs": _XS,
        party.prefix: party.namespace,
        "tns": target,
    }
    if side == "hub":
        nsmap["hub"] = HUB_NS
    name = _pascal(spec.party_id) + ("BackOffice" if side == "backoffice" else "GuichetHub")
    root = etree.Element(f"{{{_WSDL}}}definitions", nsmap=nsmap, targetNamespace=target, name=name)

    def wsdl(tag: str, parent: etree._Element, **attrs: str) -> etree._Element:
        return etree.SubElement(parent, f"{{{_WSDL}}}{tag}", attrs)

    def soap(tag: str, parent: etree._Element, **attrs: str) -> etree._Element:
        return etree.SubElement(parent, f"{{{soap_ns}}}{tag}", attrs)

    if side == "backoffice":
        types, verb = spec.receives, "Notify"
        wsdl("documentation", root).text = (
            f"Service of the {spec.party_id} back office, called by the Guichet hub to deliver"
            " messages; each is answered with an acknowledgement. The address is a placeholder:"
            " the hub delivers to the endpoint of parties.toml."
        )
    else:
        types, verb = spec.sends, "Transmit"
        wsdl("documentation", root).text = (
            f"Endpoint of the Guichet hub that {spec.party_id} calls to send its messages; each"
            " call is answered with the hub's signed receipt. The address is a placeholder."
        )
    schema = etree.SubElement(wsdl("types", root), f"{{{_XS}}}schema", {"targetNamespace": target})
    etree.SubElement(
        schema,
        f"{{{_XS}}}import",
        {"namespace": party.namespace, "schemaLocation": f"{spec.party_id}.xsd"},
    )
    if side == "hub":
        etree.SubElement(
            schema, f"{{{_XS}}}import", {"namespace": HUB_NS, "schemaLocation": "../hub/hub.xsd"}
        )
    ordered = [t for t in party.canonical.catalogue if t in types]
    for message_type in ordered:
        message = wsdl("message", root, name=f"{verb}{_pascal(message_type)}Request")
        wsdl("part", message, name="parameters", element=party.root(message_type))
    answer = "AcknowledgementResponse" if side == "backoffice" else "ReceiptResponse"
    answer_element = f"{party.prefix}:acknowledgement" if side == "backoffice" else "hub:receipt"
    wsdl("part", wsdl("message", root, name=answer), name="parameters", element=answer_element)
    port_type = wsdl("portType", root, name=f"{name}PortType")
    for message_type in ordered:
        operation = wsdl("operation", port_type, name=f"{verb}{_pascal(message_type)}")
        wsdl("documentation", operation).text = f"Message of type {message_type}."
        wsdl("input", operation, message=f"tns:{verb}{_pascal(message_type)}Request")
        wsdl("output", operation, message=f"tns:{answer}")
    binding = wsdl("binding", root, name=f"{name}Soap{version}Binding", type=f"tns:{name}PortType")
    soap("binding", binding, style="document", transport=_HTTP_TRANSPORT)
    for message_type in ordered:
        operation_name = f"{verb}{_pascal(message_type)}"
        operation = wsdl("operation", binding, name=operation_name)
        soap(
            "operation",
            operation,
            soapAction=f"{party.namespace}/{operation_name}",
            style="document",
        )
        soap("body", wsdl("input", operation), use="literal")
        soap("body", wsdl("output", operation), use="literal")
    service = wsdl("service", root, name=f"{name}Service")
    port = wsdl(
        "port", service, name=f"{name}Soap{version}Port", binding=f"tns:{binding.get('name')}"
    )
    address = "https://localhost:0/" if side == "backoffice" else "https://localhost:0/soap/v1"
    soap("address", port, location=address)
    etree.indent(root, space="  ")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<!-- {spec.party_id}: {'its back office' if side == 'backoffice' else 'the hub'}"
        f" ({party.protocol_text}). {_SCAFFOLDED} -->\n"
        + etree.tostring(root, encoding="unicode")
        + "\n"
    )


def _soap_envelope(payload: etree._Element, protocol: str) -> bytes:
    namespace = SOAP12_NS if protocol == "soap12" else SOAP11_NS
    envelope = etree.Element(f"{{{namespace}}}Envelope", nsmap={"soap": namespace})
    etree.SubElement(envelope, f"{{{namespace}}}Body").append(copy.deepcopy(payload))
    return _xml_bytes(envelope)


# ---------------------------------------------------------------------------------------------
# parties.toml, sandbox.toml


_ROUTES_HEADER = re.compile(r"^\s*\[\[\s*routes\s*\]\]")
_TABLE_HEADER = re.compile(r"^\s*\[")
_TO_LINE = re.compile(r"^(?P<head>\s*to\s*=\s*\[)(?P<inner>[^\]\n]*)(?P<tail>\].*)$", re.DOTALL)
# Targets that already reach a party by the procedure: naming it besides would send it more.
_REACHING_TARGETS = ("@case-parties", "@correlated-sender")


def _party_entry(spec: PartySpec, endpoint: str, enterprise_number: str, role: str) -> list[str]:
    name = _toml(spec.name or spec.party_id)
    lines = [
        "",
        f"[parties.{spec.party_id}]",
        f"# {_SCAFFOLDED}",
        f"names = {{ nl = {name}, fr = {name}, de = {name}, en = {name} }}",
        f"role = {_toml(role)}",
    ]
    if spec.region:
        lines.append(f"region = {_toml(spec.region)}")
    lines += [f"protocol = {_toml(spec.protocol)}", f"endpoint = {_toml(endpoint)}"]
    if spec.protocol.startswith("soap"):
        if spec.receives:
            lines.append(f"wsdl = {_toml(spec.party_id + '-backoffice.wsdl')}")
        if spec.sends:
            lines.append(f"hub_wsdl = {_toml(spec.party_id + '-hub.wsdl')}")
    lines += [
        f"enterprise_number = {_toml(enterprise_number)}",
        f"sends = [{', '.join(_toml(t) for t in spec.sends)}]",
        f"receives = [{', '.join(_toml(t) for t in spec.receives)}]",
    ]
    return lines


def _with_routes(text: str, spec: PartySpec) -> tuple[str, list[str]]:
    """parties.toml with the party added to the routes of the types it receives.

    The party joins the ``to`` of each unconditional route of the type (a line edit, the rest of
    the file as it was); a type whose routes reach receivers by @case-parties or
    @correlated-sender (or @competent-region, for a region) is left alone: the procedure reaches
    the party already; a type with no
    unconditional route gets one of its own, appended."""
    routes = tomllib.loads(text).get("routes", [])
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _ROUTES_HEADER.match(line)]
    if len(starts) != len(routes):
        raise ConfigurationError(
            "parties.toml: the routes are not all [[routes]] tables; add the party to them by hand"
        )
    notes: list[str] = []
    appended: list[str] = []
    party = spec.party_id
    for message_type in spec.receives:
        indexes = [k for k, r in enumerate(routes) if r.get("type") == message_type]
        targets = [t for k in indexes for t in routes[k].get("to", [])]
        reaching_targets = {*_REACHING_TARGETS, *(["@competent-region"] if spec.region else [])}
        reaching = sorted({t for t in targets if t in reaching_targets})
        if party in targets:
            notes.append(f"{message_type}: already routed to {party}")
            continue
        if reaching:
            notes.append(
                f"{message_type}: routes unchanged, {' and '.join(reaching)}"
                f" reach{'es' if len(reaching) == 1 else ''} {party}"
                " by the procedure"
            )
            continue
        unconditional = [k for k in indexes if "when" not in routes[k]]
        if not unconditional:
            appended += [
                "",
                "[[routes]]",
                f"type = {_toml(message_type)}",
                f"to = [{_toml(party)}]",
            ]
            notes.append(f"{message_type}: a new route to {party}")
            continue
        for k in unconditional:
            start = starts[k]
            end = next(
                (i for i in range(start + 1, len(lines)) if _TABLE_HEADER.match(lines[i])),
                len(lines),
            )
            for i in range(start + 1, end):
                match = _TO_LINE.match(lines[i])
                if match:
                    inner = match["inner"].rstrip().rstrip(",")
                    joined = f"{inner}, {_toml(party)}" if inner.strip() else _toml(party)
                    lines[i] = f"{match['head']}{joined}{match['tail']}"
                    break
            else:
                raise ConfigurationError(
                    f"parties.toml: the route of {message_type} has no one-line `to = [...]`;"
                    f" add {party} to it by hand"
                )
            to = ", ".join(routes[k]["to"])
            notes.append(f"{message_type}: {party} added to the route to {to}")
    new_text = "".join(lines)
    if appended:
        new_text += "\n".join(appended) + "\n"
    expected = [dict(r) for r in routes]
    result = tomllib.loads(new_text).get("routes", [])
    if [r.get("type") for r in result[: len(expected)]] != [r.get("type") for r in expected]:
        raise ConfigurationError("parties.toml: editing the routes went wrong; nothing written")
    return new_text, notes


def _office_entry(party: _Party) -> list[str]:
    spec = party.spec
    office = f"office.{spec.party_id}"
    lines = ["", "", f"[{office}]", f"# {_SCAFFOLDED}"]
    if party.soap:
        if spec.receives:
            lines.append(f"wsdl = {_toml(spec.party_id + '-backoffice.wsdl')}")
        if spec.sends:
            lines.append(f"hub_wsdl = {_toml(spec.party_id + '-hub.wsdl')}")
        if spec.receives:
            lines += [
                "",
                f"[{office}.acknowledgement]",
                'messageId = "$messageId"',
                'receivedAt = "$now"',
            ]
    lines.append("")
    if spec.receives and spec.sends:
        lines += [
            "# It records what it receives; to answer as the real back office would, e.g.:",
            f"# [[{office}.respond]]",
            f"# on = {_toml(spec.receives[0])}",
            f"# send = [{_toml(spec.sends[0])}]",
        ]
    else:
        lines.append("# It records what it receives and answers nothing.")
    return lines


# ---------------------------------------------------------------------------------------------
# Canonical instances


def _canonical_instances(home: Path, schema: Schema) -> dict[str, tuple[Path, etree._Element]]:
    """One valid canonical message per type, the richest found (most elements), from the golden
    pairs of every party and tests/corpus/canonical/valid/."""
    candidates = [
        *sorted(home.glob("mappings/*/to-canonical/*.expected.xml")),
        *sorted(home.glob("mappings/*/from-canonical/*.input.xml")),
        *sorted(home.glob("tests/corpus/canonical/valid/*.xml")),
    ]
    found: dict[str, tuple[int, Path, etree._Element]] = {}
    for path in candidates:
        try:
            element = parse_xml(path.read_bytes())
            schema.validate(element)
        except (GatewayError, OSError):
            continue  # not canonical, or not valid against the canonical schema in force
        message_type = element.findtext(f"{_C}envelope/{_C}type") or ""
        size = sum(1 for _ in element.iter())
        if message_type not in found or size > found[message_type][0]:
            found[message_type] = (size, path, element)
    return {t: (path, element) for t, (_, path, element) in found.items()}


# ---------------------------------------------------------------------------------------------
# Checks of the request


def _checked(home: Path, spec: PartySpec, catalogue: Sequence[str]) -> PartySpec:
    party_id = spec.party_id
    if not PARTY_ID.fullmatch(party_id) or len(party_id) > 64:
        raise ConfigurationError(
            f"{party_id!r} is not a party id: lowercase, a 2-letter country then"
            " dash-separated words ([a-z]{2}(-[a-z0-9]+)+, at most 64), e.g. be-bru-bee"
        )
    if spec.protocol not in PROTOCOLS:
        raise ConfigurationError(f"protocol {spec.protocol!r}: one of {', '.join(PROTOCOLS)}")
    if spec.format not in FORMATS:
        raise ConfigurationError(f"format {spec.format!r}: one of {', '.join(FORMATS)}")
    if spec.protocol.startswith("soap") and spec.format == "json":
        raise ConfigurationError("SOAP bodies are XML: a SOAP party needs --format xml")
    if spec.protocol == "soap12" and not soap12_supported():
        raise ConfigurationError(
            "the hub does not speak SOAP 1.2 yet (no `soap12` adapter is registered under the"
            " guichet.adapters entry points): scaffold with --protocol soap11, or add the adapter"
            " first"
        )
    parties = load_parties(home / "parties.toml")
    existing = [
        what
        for what, there in (
            ("parties.toml", party_id in parties),
            (f"schemas/{party_id}/", (home / "schemas" / party_id).exists()),
            (f"mappings/{party_id}/", (home / "mappings" / party_id).exists()),
            (f"examples/{party_id}/", (home / "examples" / party_id).exists()),
            ("examples/sandbox.toml", party_id in _offices(home)),
        )
        if there
    ]
    if existing:
        raise ConfigurationError(f"party {party_id} exists already: {', '.join(existing)}")
    unknown = [t for t in (*spec.sends, *spec.receives) if t not in catalogue]
    if unknown:
        raise ConfigurationError(
            f"not in the message catalogue: {', '.join(unknown)}; the types are"
            f" {', '.join(catalogue)}"
        )
    if not spec.sends and not spec.receives:
        raise ConfigurationError("a party sends or receives something: give --sends or --receives")
    if spec.protocol.startswith("soap") and not spec.receives:
        raise ConfigurationError(
            "the hub delivers to a SOAP party through its WSDL, which needs one operation at"
            " least: give --receives (e.g. problem)"
        )
    if spec.region is not None:
        if spec.region not in REGIONS:
            raise ConfigurationError(f"region {spec.region!r}: one of {', '.join(REGIONS)}")
        holder = parties.region_party(spec.region)
        if holder is not None:
            raise ConfigurationError(f"{holder.id} already is the party of region {spec.region}")
    role = spec.role or ("region" if spec.region else "federal")
    if role not in ROLES:
        raise ConfigurationError(f"role {role!r}: one of {', '.join(ROLES)}")
    if role == "region" and spec.region is None:
        raise ConfigurationError("a region party needs --region (the region it is competent for)")
    taken = {p.enterprise_number for p in parties.parties.values()}
    number = spec.enterprise_number
    if number is None:
        number = _derived_enterprise_number(party_id, taken)
    else:
        number = re.sub(r"[\s.]", "", number.upper()).removeprefix("BE")
        if not is_valid_enterprise_number(number):
            raise ConfigurationError(
                f"{spec.enterprise_number!r} is not a KBO/BCE enterprise number (10 digits,"
                " starting 0 or 1, check digits 97 - first 8 mod 97)"
            )
        if number in taken:
            raise ConfigurationError(f"enterprise number {number} belongs to another party")
    order = {t: i for i, t in enumerate(catalogue)}
    return PartySpec(
        party_id=party_id,
        protocol=spec.protocol,
        format=spec.format,
        name=spec.name,
        enterprise_number=number,
        sends=tuple(sorted(set(spec.sends), key=order.__getitem__)),
        receives=tuple(sorted(set(spec.receives), key=order.__getitem__)),
        role=role,
        region=spec.region,
        route=spec.route,
    )


def _offices(home: Path) -> set[str]:
    path = home / "examples" / "sandbox.toml"
    if not path.is_file():
        return set()
    try:
        return set(tomllib.loads(path.read_text()).get("office", {}))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


def _derived_enterprise_number(party_id: str, taken: set[str]) -> str:
    """A valid KBO/BCE number derived from the id (development only: replace it by the real)."""
    seed = int.from_bytes(hashlib.sha256(party_id.encode()).digest()[:8], "big")
    for attempt in range(1000):
        body = f"0{(seed + attempt) % 10**7:07d}"
        number = f"{body}{97 - int(body) % 97:02d}"
        if number not in taken and is_valid_enterprise_number(number):
            return number
    raise ConfigurationError("no free enterprise number: give --enterprise-number")


def _endpoint(home: Path, protocol: str) -> str:
    """https://127.0.0.1:<port>: the first port after those of parties.toml that is free now."""
    parties = load_parties(home / "parties.toml")
    used = {HUB_PORT}
    for party in parties.parties.values():
        match = re.match(r"https?://[^/:]+:(\d+)", party.endpoint)
        if match:
            used.add(int(match[1]))
    port = max(used) + 1
    while port in used or not _bindable(port):
        port += 1
    return f"https://127.0.0.1:{port}" + ("/" if protocol.startswith("soap") else "")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Making it


def scaffold_party(home: Path, request: PartySpec) -> Scaffolded:
    """Write a new party under ``home`` (see the module's docstring); ``ConfigurationError``
    names what is refused, and then nothing is written."""
    home = home.resolve()
    with tempfile.TemporaryDirectory(prefix="guichet-party-") as temporary:
        staging = Path(temporary)
        for folder in ("canonical", "hub"):
            if (home / "schemas" / folder).is_dir():
                shutil.copytree(home / "schemas" / folder, staging / "schemas" / folder)
        shutil.copytree(home / "mappings" / "codelists", staging / "mappings" / "codelists")
        canonical = _Canonical.of(SchemaCatalog.load(staging / "schemas")["canonical"])
        spec = _checked(home, request, canonical.catalogue)
        files, texts, notes, endpoint = _make(home, staging, spec, canonical)
        # Everything checked: write it.
        created: list[Path] = []
        for relative, content in files.items():
            target = home / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            created.append(target)
        for relative, text in texts.items():
            _extend(home / relative, text.encode())
    assert spec.enterprise_number is not None
    return Scaffolded(
        party_id=spec.party_id,
        endpoint=endpoint,
        enterprise_number=spec.enterprise_number,
        created=tuple(created),
        appended=tuple(home / r for r in texts),
        routes=tuple(notes),
    )


def _make(
    home: Path, staging: Path, spec: PartySpec, canonical: _Canonical
) -> tuple[dict[str, bytes], dict[str, str], list[str], str]:
    """Every file of the party, made and checked in ``staging``: (new files by relative path,
    the new texts of parties.toml and examples/sandbox.toml, what --route did, the endpoint)."""
    party_id = spec.party_id
    for payload_type in spec.sends + spec.receives:
        if payload_type not in canonical.payloads:
            raise ConfigurationError(
                f"the canonical model has no payload element {payload_name(payload_type)}"
                f" for {payload_type}"
            )
    party = _Party(spec, canonical, _prefix(party_id), f"urn:be:guichet:party:{party_id}:1")
    for message_type in party.types:
        _check_shape(canonical.payloads[message_type], party.json)
    instances = _canonical_instances(home, canonical.schema)
    missing = [t for t in party.types if t not in instances]
    if missing:
        raise ConfigurationError(
            f"no valid canonical message of {', '.join(missing)} to derive the golden pairs and"
            " examples from (looked in mappings/*/to-canonical/*.expected.xml,"
            " mappings/*/from-canonical/*.input.xml, tests/corpus/canonical/valid/*.xml): add"
            " one, then run this again"
        )
    files: dict[str, bytes] = {}
    schema_dir = f"schemas/{party_id}"
    mapping_dir = f"mappings/{party_id}"
    files[f"{schema_dir}/{party_id}.xsd"] = party.schema_text().encode()
    if party.soap:
        if spec.receives:
            files[f"{schema_dir}/{party_id}-backoffice.wsdl"] = _wsdl(party, "backoffice").encode()
        if spec.sends:
            files[f"{schema_dir}/{party_id}-hub.wsdl"] = _wsdl(party, "hub").encode()
    # The mappings: from-canonical of every type (the examples of what it sends are made by
    # running them), to-canonical of what it sends; only what it receives is kept as
    # from-canonical.
    staged: dict[str, bytes] = {}
    for message_type in party.types:
        staged[f"{mapping_dir}/from-canonical/{message_type}.toml"] = party.mapping_text(
            message_type, "from-canonical"
        ).encode()
    for message_type in spec.sends:
        files[f"{mapping_dir}/to-canonical/{message_type}.toml"] = party.mapping_text(
            message_type, "to-canonical"
        ).encode()
    for message_type in spec.receives:
        relative = f"{mapping_dir}/from-canonical/{message_type}.toml"
        files[relative] = staged[relative]
    if spec.sends:
        files[f"{mapping_dir}/to-canonical/_envelope.toml"] = party.envelope_text(
            "to-canonical"
        ).encode()
    staged[f"{mapping_dir}/from-canonical/_envelope.toml"] = party.envelope_text(
        "from-canonical"
    ).encode()
    if spec.receives:
        files[f"{mapping_dir}/from-canonical/_envelope.toml"] = staged[
            f"{mapping_dir}/from-canonical/_envelope.toml"
        ]
    files[f"{mapping_dir}/party.toml"] = party.party_toml().encode()
    files[f"{mapping_dir}/codelists.toml"] = party.codelists_text().encode()  # after the rules
    _write(staging, {**files, **staged})
    mappings = _loaded(staging, party_id)

    # Golden pairs and examples, by running the compiled mappings.
    party_format = mappings.party(party_id)
    for message_type in party.types:
        path, instance = instances[message_type]
        reading = mappings.get(party_id, "from-canonical", message_type)
        if message_type in spec.receives:
            source = instance.findtext(f"{_C}envelope/{_C}source") or ""
            produced = reading.apply(
                instance, {**GOLDEN_PARAMS, "sender": source, "receiver": party_id}
            )
            base = f"{mapping_dir}/from-canonical/{message_type}"
            files[f"{base}.input.xml"] = path.read_bytes()
            files[f"{base}.expected.{spec.format}"] = _party_bytes(party_format, produced)
        if message_type in spec.sends:
            example = _sent_example(party, reading, instance)
            party_format.schema.validate(example)
            writing = mappings.get(party_id, "to-canonical", message_type)
            params = {**GOLDEN_PARAMS, "sender": party_id, "receiver": ""}
            expected = writing.apply(example, params)
            writing.target_schema.validate(expected)
            base = f"{mapping_dir}/to-canonical/{message_type}"
            files[f"{base}.input.{spec.format}"] = _party_bytes(party_format, example)
            files[f"{base}.expected.xml"] = _xml_bytes(expected)
            extension = "json" if party.json else "xml"
            files[f"examples/{party_id}/{message_type}.{extension}"] = (
                _soap_envelope(example, spec.protocol)
                if party.soap
                else _party_bytes(party_format, example)
            )
    for relative in list(staged):  # the staged extras are not part of the party
        if relative not in files:
            (staging / relative).unlink()
    _write(staging, files)
    mappings = _loaded(staging, party_id)
    problems = [
        problem
        for key, mapping in mappings.mappings.items()
        if key[0] == party_id
        for problem in check_golden(mappings, mapping)
    ]
    if problems:
        raise ConfigurationError("the scaffold does not check (a bug):\n  " + "\n  ".join(problems))

    # parties.toml and sandbox.toml: appended (and --route's edits), checked in staging.
    endpoint = _endpoint(home, spec.protocol)
    assert spec.enterprise_number is not None and spec.role is not None
    parties_text = (home / "parties.toml").read_bytes().decode()
    notes: list[str] = []
    if spec.route:
        parties_text, notes = _with_routes(parties_text, spec)
    # The party's table after the routes' tables is valid TOML: a table may be defined anywhere.
    parties_text = _appended(
        parties_text, _party_entry(spec, endpoint, spec.enterprise_number, spec.role)
    )
    (staging / "parties.toml").write_text(parties_text)
    registry = load_parties(staging / "parties.toml")
    office = _office_entry(party)
    (staging / "examples").mkdir(exist_ok=True)
    (staging / "examples" / "sandbox.toml").write_text("\n".join(office).lstrip() + "\n")
    _check_office(staging, mappings, party_id)
    _check_examples(staging, files, mappings, registry, spec)
    sandbox_path = home / "examples" / "sandbox.toml"
    sandbox_text = sandbox_path.read_bytes().decode() if sandbox_path.is_file() else ""
    texts = {
        "parties.toml": parties_text,
        "examples/sandbox.toml": _appended(sandbox_text, office),
    }
    tomllib.loads(texts["examples/sandbox.toml"])
    return files, texts, notes, endpoint


def _extend(path: Path, content: bytes) -> None:
    """Write a file's new content: appended when it only grew, so the file is never rewritten
    (what is there, comments included, stays byte for byte)."""
    old = path.read_bytes() if path.is_file() else b""
    if content.startswith(old):
        with path.open("ab") as handle:
            handle.write(content[len(old) :])
    else:  # --route edited a line
        path.write_bytes(content)


def _appended(text: str, lines: list[str]) -> str:
    if text and not text.endswith("\n"):
        text += "\n"
    return text + "\n".join(lines) + "\n"


def _write(root: Path, files: dict[str, bytes]) -> None:
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def _loaded(staging: Path, party_id: str) -> MappingSet:
    try:
        return MappingSet.load(staging)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"the scaffold of {party_id} does not load (a bug): {exc.detail}"
        ) from exc


def _sent_example(party: _Party, reading: Any, instance: etree._Element) -> etree._Element:
    """A message the party sends: the canonical instance sent by the party itself, in its
    format (the from-canonical mapping run on it), with no recipient (the hub routes it)."""
    message = copy.deepcopy(instance)
    source = message.find(f"{_C}envelope/{_C}source")
    if source is not None:
        source.text = party.spec.party_id
    destination = message.find(f"{_C}envelope/{_C}destination")
    if destination is not None:
        destination.getparent().remove(destination)  # type: ignore[union-attr]
    params = {**GOLDEN_PARAMS, "sender": party.spec.party_id, "receiver": party.spec.party_id}
    produced: etree._Element = reading.apply(message, params)
    header = produced.find(party.clark("header"))
    recipient = header.find(party.clark(_RECIPIENT)) if header is not None else None
    if header is not None and recipient is not None:
        header.remove(recipient)
    return produced


def _party_bytes(party_format: Any, element: etree._Element) -> bytes:
    if party_format.binding is not None:
        document = party_format.binding.to_json(element)
        return (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()
    return _xml_bytes(element)


def _xml_bytes(element: etree._Element) -> bytes:
    element = copy.deepcopy(element)
    etree.indent(element, space="  ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(element) + b"\n"


def _check_office(staging: Path, mappings: MappingSet, party_id: str) -> None:
    """The sandbox office loads (field paths, WSDLs, acknowledgements that fit them)."""
    from gateway.sandbox import BackOffice, load_profiles

    profiles = load_profiles(staging / "examples" / "sandbox.toml", mappings)
    BackOffice(mappings.party(party_id), profiles[party_id], respond=False)


def _check_examples(
    staging: Path,
    files: dict[str, bytes],
    mappings: MappingSet,
    registry: Any,
    spec: PartySpec,
) -> None:
    """Each example passes what ``guichet validate`` runs (schema, authorisation, mapping,
    canonical schema, domain checks)."""
    from gateway.checkfile import check_file

    party_id = spec.party_id
    for relative in files:
        if relative.startswith(f"examples/{party_id}/"):
            checked = relative
            if spec.protocol == "soap12":  # its payload: `guichet validate` reads SOAP 1.1
                checked = f"mappings/{party_id}/to-canonical/{Path(relative).stem}.input.xml"
            report = check_file(staging / checked, party_id, mappings, registry)
            if not report.ok:
                raise ConfigurationError(
                    f"the scaffold's example {relative} does not validate (a bug):"
                    f" {report.problems}"
                )


# ---------------------------------------------------------------------------------------------
# The command


def main(args: Any) -> int:
    """``guichet party new`` (arguments parsed by gateway.cli)."""
    from gateway.config import Settings

    home = args.home if args.home is not None else Settings().home
    spec = PartySpec(
        party_id=args.party_id,
        protocol=args.protocol,
        format=args.format,
        name=args.name,
        enterprise_number=args.enterprise_number,
        sends=tuple(args.sends or ()),
        receives=tuple(args.receives or ()),
        role=args.role,
        region=args.region,
        route=args.route,
    )
    done = scaffold_party(Path(home), spec)
    root = Path(home).resolve()
    print(
        f"{done.party_id}: a {spec.protocol}/{spec.format} party at {done.endpoint}"
        f" (enterprise number {done.enterprise_number})"
    )
    for path in done.created:
        print(f"  new       {path.relative_to(root)}")
    for path in done.appended:
        print(f"  appended  {path.relative_to(root)}")
    for note in done.routes:
        print(f"  route     {note}")
    if spec.receives and not spec.route:
        print("  routes    unchanged: add the party to the routes of parties.toml (or --route)")
    print("next: docs/adding-a-party.md (reshape, `guichet mappings check`, certificates)")
    return 0
