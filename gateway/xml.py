"""The one hardened parser: every byte of XML or JSON that enters the hub goes through here.

No DTD, no entities (internal or external), no processing instructions, no network, no XInclude;
size and depth limits. JSON: no duplicate keys, no NaN/Infinity, bounded nesting. Nothing else in
the code calls ``lxml.etree.fromstring`` or ``json.loads`` on untrusted input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from email.message import Message
from email.utils import collapse_rfc2231_value
from types import MappingProxyType
from typing import Any, Literal

from lxml import etree

from gateway.errors import ParseError, PayloadTooLargeError
from gateway.namespaces import SOAP11_NS

__all__ = [
    "SOAP11_NS",
    "SOAP12_FAULT_CODES",
    "SOAP12_NS",
    "SOAP_ENVELOPE_NS",
    "ParserLimits",
    "SoapVersion",
    "parse_json",
    "parse_xml",
    "soap_action_of",
    "soap_content_type",
    "soap_fault",
    "soap_payload",
    "soap_version",
    "soap_version_of",
]

SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
SoapVersion = Literal["1.1", "1.2"]
SOAP_ENVELOPE_NS: Mapping[SoapVersion, str] = MappingProxyType({"1.1": SOAP11_NS, "1.2": SOAP12_NS})
# SOAP 1.1 fault codes as SOAP 1.2 names them (SOAP 1.2 Part 1 § 5.4.6); MustUnderstand and
# VersionMismatch keep their names.
SOAP12_FAULT_CODES: Mapping[str, str] = MappingProxyType({"Client": "Sender", "Server": "Receiver"})
# How each version travels over HTTP (SOAP 1.1 § 6.1; SOAP 1.2 Part 2 § 7.1.4): named in refusals.
_MEDIA_TYPE: dict[SoapVersion, str] = {"1.1": "text/xml", "1.2": "application/soap+xml"}


@dataclass(frozen=True)
class ParserLimits:
    """Limits applied to every inbound body (safe defaults for the messages of the procedure)."""

    max_bytes: int = 2 * 1024 * 1024
    max_depth: int = 48


DEFAULT_LIMITS = ParserLimits()


class _NoExternalLoads(etree.Resolver):
    """Whatever a document names (a DTD, an entity, a file), nothing is ever loaded."""

    def resolve(self, system_url: str, public_id: str, context: object) -> object:  # type: ignore[override]
        raise ParseError("external resources are not loaded", code="xml.forbidden-construct")


# The encoding is forced to UTF-8, whatever a document declares or its first bytes suggest:
# libxml2 then reads exactly the bytes the prolog checks below have read, so no UTF-16, UTF-32
# or UTF-7 body can carry a DTD, an entity or a processing instruction past them.
_PARSER = etree.XMLParser(
    encoding="utf-8",
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_blank_text=False,
    collect_ids=False,
)
_PARSER.resolvers.add(_NoExternalLoads())

_depth_probes: dict[int, etree.XPath] = {}


def _depth_probe(depth: int) -> etree.XPath:
    # An absolute path of depth+1 element steps: libxml2 walks it in C, stopping where the tree
    # ends.
    probe = _depth_probes.get(depth)
    if probe is None:
        probe = etree.XPath("boolean(/" + "/".join(["*"] * (depth + 1)) + ")")
        _depth_probes[depth] = probe
    return probe


def _check_prolog(data: bytes) -> None:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ParseError(
            "DTDs and entity declarations are not accepted", code="xml.forbidden-construct"
        )
    start = 0
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<?xml"):
        start = len(data) - len(head) + head.find(b"?>") + 2
    if data.find(b"<?", start) != -1:
        raise ParseError("processing instructions are not accepted", code="xml.forbidden-construct")


def parse_xml(data: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> etree._Element:
    """Parse untrusted XML bytes into an element, or raise a ``ParseError`` with the line."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(f"body of {len(data)} bytes exceeds {limits.max_bytes}")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data:
        raise ParseError(
            "XML bodies are UTF-8 (this one looks UTF-16 or UTF-32)", code="xml.encoding"
        )
    _check_prolog(data)
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if isinstance(exc.lineno, int) else None
        raise ParseError(f"malformed XML: {exc.msg}", line=line) from exc
    # Belt and braces: a document type of any kind is refused, however it got there.
    if root.getroottree().docinfo.doctype:  # type: ignore[union-attr]
        raise ParseError("DTDs are not accepted", code="xml.forbidden-construct")
    if _depth_probe(limits.max_depth)(root):
        raise ParseError(f"XML nested deeper than {limits.max_depth}", code="xml.too-deep")
    return root


def soap_version(envelope: etree._Element) -> SoapVersion:
    """The SOAP version of an envelope, by the namespace of its root element.

    Raises ``ParseError`` (``soap.malformed``) when the root is no SOAP 1.1 or 1.2 Envelope.
    """
    for version, namespace in SOAP_ENVELOPE_NS.items():
        if envelope.tag == f"{{{namespace}}}Envelope":
            return version
    raise ParseError(
        f"root element is {envelope.tag}, not a SOAP 1.1 or 1.2 Envelope", code="soap.malformed"
    )


def soap_payload(
    envelope: etree._Element,
    expect: SoapVersion | None = None,
    understood: frozenset[str] = frozenset(),
) -> tuple[etree._Element, etree._Element | None]:
    """The single payload element of a SOAP 1.1 or 1.2 envelope's Body, and the Header if any.

    Both versions follow the same rules: at most one Header, before exactly one Body; one element
    in the Body and no text beside it; a header entry that must be understood is refused, for the
    hub understands none but those named in ``understood`` (Clark names: WS-Security's, where the
    caller verifies it). ``expect`` is the version the transport announced (its media type): an
    envelope of the other version is refused with ``soap.version-mismatch``. The version itself is
    :func:`soap_version`.
    """
    version = soap_version(envelope)
    if expect is not None and version != expect:
        raise ParseError(
            f"a SOAP {version} envelope where SOAP {expect} is expected ({_MEDIA_TYPE[expect]}"
            f" carries SOAP {expect} envelopes, {_MEDIA_TYPE[version]} SOAP {version})",
            code="soap.version-mismatch",
        )
    namespace = SOAP_ENVELOPE_NS[version]
    header: etree._Element | None = None
    bodies: list[etree._Element] = []
    for child in envelope:
        if not isinstance(child.tag, str):
            continue
        if child.tag == f"{{{namespace}}}Header" and header is None and not bodies:
            header = child
        elif child.tag == f"{{{namespace}}}Body":
            bodies.append(child)
        else:
            raise ParseError(f"unexpected {child.tag} in the Envelope", code="soap.malformed")
    if len(bodies) != 1:
        raise ParseError(
            f"a SOAP envelope has exactly one Body, this one has {len(bodies)}",
            code="soap.malformed",
        )
    body = bodies[0]
    if (body.text or "").strip() or any((c.tail or "").strip() for c in body):
        raise ParseError("the SOAP Body holds text besides its element", code="soap.malformed")
    if header is not None:
        must_understand = f"{{{namespace}}}mustUnderstand"
        for entry in header:
            # A header entry that must be understood and is not one the caller understands is
            # refused, as SOAP 1.1 § 4.2.3 and SOAP 1.2 Part 1 § 5.2.3 require
            # ("1" in SOAP 1.1; an xs:boolean, "true" or "1", in SOAP 1.2).
            if (
                isinstance(entry.tag, str)
                and entry.tag not in understood
                and (entry.get(must_understand) or "").strip() in ("1", "true")
            ):
                raise ParseError(
                    f"header {entry.tag} must be understood, and is not",
                    code="soap.must-understand",
                )
    payload = [c for c in body if isinstance(c.tag, str)]
    if len(payload) != 1:
        raise ParseError(
            f"the SOAP Body must hold exactly one element, it holds {len(payload)}",
            code="soap.malformed",
        )
    return payload[0], header


# ---------------------------------------------------------------------------------------------
# SOAP over HTTP: which version a request announces, and its action


def soap_version_of(content_type: str) -> SoapVersion:
    """The SOAP version an HTTP Content-Type announces: ``application/soap+xml`` is SOAP 1.2,
    anything else is taken for SOAP 1.1 (``text/xml``), whose media type is then checked."""
    return "1.2" if _content_type(content_type).get_content_type() == _MEDIA_TYPE["1.2"] else "1.1"


def soap_action_of(content_type: str, soap_action: str | None) -> str | None:
    """The action of a SOAP request, unquoted; ``None`` when none (or an empty one) is given.

    SOAP 1.2 carries it as the ``action`` parameter of ``application/soap+xml`` (RFC 3902), and a
    SOAPAction header beside it means nothing; SOAP 1.1 carries it in the SOAPAction header.
    """
    if soap_version_of(content_type) == "1.2":
        raw = _content_type(content_type).get_param("action")
        value = collapse_rfc2231_value(raw) if raw is not None else ""
    else:
        value = (soap_action or "").strip().strip('"')
    return value or None


def soap_fault(
    code: str, reason: str, version: SoapVersion, detail: etree._Element | None = None
) -> tuple[bytes, int]:
    """A SOAP Fault envelope of ``version`` and the HTTP status its binding gives it.

    ``code`` is a SOAP 1.1 fault code (``Client``, ``Server``, ``MustUnderstand``,
    ``VersionMismatch``); SOAP 1.2 names it its own way (``env:Sender``, ``env:Receiver``).
    HTTP: SOAP 1.1 carries every fault with 500; SOAP 1.2 (Part 2 § 7.5.2.2) env:Sender with 400,
    the others with 500.
    """
    namespace = SOAP_ENVELOPE_NS[version]
    prefix = "soap" if version == "1.1" else "env"
    envelope = etree.Element(f"{{{namespace}}}Envelope", nsmap={prefix: namespace})
    fault = etree.SubElement(
        etree.SubElement(envelope, f"{{{namespace}}}Body"), f"{{{namespace}}}Fault"
    )
    if version == "1.1":
        etree.SubElement(fault, "faultcode").text = f"soap:{code}"
        etree.SubElement(fault, "faultstring").text = reason
        if detail is not None:
            etree.SubElement(fault, "detail").append(detail)
        return etree.tostring(envelope, encoding="UTF-8", xml_declaration=True), 500
    value = SOAP12_FAULT_CODES.get(code, code)
    env = f"{{{namespace}}}"
    etree.SubElement(etree.SubElement(fault, f"{env}Code"), f"{env}Value").text = f"env:{value}"
    text = etree.SubElement(etree.SubElement(fault, f"{env}Reason"), f"{env}Text")
    text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    text.text = reason
    if detail is not None:
        etree.SubElement(fault, f"{env}Detail").append(detail)
    status = 400 if value == "Sender" else 500
    return etree.tostring(envelope, encoding="UTF-8", xml_declaration=True), status


def soap_content_type(version: SoapVersion, action: str | None = None) -> str:
    """The Content-Type of a SOAP message of ``version``; ``action`` only travels in SOAP 1.2's."""
    if version == "1.1":
        return f"{_MEDIA_TYPE['1.1']}; charset=utf-8"
    parameter = "" if action is None else '; action="' + action.replace('"', '\\"') + '"'
    return f"{_MEDIA_TYPE['1.2']}; charset=utf-8{parameter}"


def _content_type(value: str) -> Message:
    # The lenient (compat32) parser: an unquoted action="urn:a/b" is read whole, as senders mean it.
    message = Message()
    message["content-type"] = value
    return message


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise ParseError(f"duplicate key {duplicate!r} in a JSON object", code="json.duplicate-key")
    return result


def _no_constant(name: str) -> Any:
    raise ParseError(f"{name} is not a JSON number", code="json.malformed")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(data: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> Any:
    """Parse untrusted JSON bytes (UTF-8). Depth beyond ``limits.max_depth`` is refused by the
    schema binding, which walks every value; what is deeper than the decoder's own guard is refused
    here."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(f"body of {len(data)} bytes exceeds {limits.max_bytes}")
    try:
        text = data.decode("utf-8-sig")  # a byte order mark is tolerated (RFC 8259 § 8.1)
        # Decimal, not float: an amount keeps every digit its sender wrote.
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=Decimal,
        )
        if _SURROGATE_ESCAPE.search(data):
            # "\ud800" decodes to a lone surrogate, which no UTF-8 text (nor XML) can carry.
            json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ParseError(
            "a string holds a lone surrogate (\\ud800–\\udfff without its pair)",
            code="json.malformed",
        ) from exc
    except UnicodeDecodeError as exc:
        raise ParseError(f"body is not UTF-8 (byte {exc.start})", code="json.malformed") from exc
    except json.JSONDecodeError as exc:
        raise ParseError(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            code="json.malformed",
            line=exc.lineno,
        ) from exc
    except RecursionError as exc:
        # The C decoder guards its recursion; a body nested that deep is refused, not a crash.
        raise ParseError("JSON nested too deeply", code="json.too-deep") from exc
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ParseError(f"malformed JSON: {exc}", code="json.malformed") from exc
    return value
