"""The one hardened parser: every byte of XML or JSON that enters the hub goes through here.

No DTD, no entities (internal or external), no processing instructions, no network, no XInclude
(its namespace is refused wherever it is declared); UTF-8 only; limits on size, depth, the number
of elements, the attributes of one element and the length of one text or attribute value. JSON: no
duplicate keys, no NaN/Infinity, bounded nesting, numbers of bounded size. Nothing else in the code
calls ``lxml.etree.fromstring`` or ``json.loads`` on untrusted input.

The limits are checked after libxml2 has built the tree (itself bounded by ``max_bytes``), each by
one pass in C, and most not at all: a byte-level test first tells whether a body could exceed a
limit (a body of 80 KB cannot hold 20 000 elements, one without a long run between two ``<`` holds
no long text), and only such a body is walked.
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
from typing import Any, Literal, cast

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
    max_elements: int = 20_000  # elements in one document
    max_attributes: int = 64  # attributes (namespace declarations included) on one element
    max_text_bytes: int = 256 * 1024  # UTF-8 bytes of one text node or attribute value
    max_number_digits: int = 100  # characters of one JSON number, and its decimal exponent

    @classmethod
    def of(cls, settings: Any) -> ParserLimits:
        """The limits a hub's ``Settings`` set (``max_body_bytes``, ``max_depth``, ``max_…``)."""
        return cls(
            max_bytes=settings.max_body_bytes,
            max_depth=settings.max_depth,
            max_elements=settings.max_elements,
            max_attributes=settings.max_attributes,
            max_text_bytes=settings.max_text_bytes,
            max_number_digits=settings.max_number_digits,
        )


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


_BOM = b"\xef\xbb\xbf"
# The encoding an XML declaration names (XML 1.0 § 4.3.3): a UTF-8 body may call itself UTF-8 or
# US-ASCII (its subset); any other name is a body that does not know what it is.
_DECLARED_ENCODING = re.compile(rb"""\s*<\?xml\s[^>]*?\bencoding\s*=\s*["']([^"']*)["']""")
_UTF8_NAMES = frozenset({b"utf-8", b"utf8", b"us-ascii", b"ascii"})


def _check_encoding(data: bytes) -> None:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data:
        raise ParseError(
            "XML bodies are UTF-8 (this one looks UTF-16 or UTF-32)", code="xml.encoding"
        )
    if not data.isascii():
        try:
            data.decode("utf-8")  # strict: overlong forms, lone continuations, surrogates refused
        except UnicodeDecodeError as exc:
            raise ParseError(
                f"XML bodies are UTF-8: byte {exc.start} ({data[exc.start]:#04x}) is not"
                f" ({exc.reason})",
                code="xml.encoding",
                line=data.count(b"\n", 0, exc.start) + 1,
            ) from None
    declared = _DECLARED_ENCODING.match(data.removeprefix(_BOM))
    if declared is not None and declared[1].strip().lower() not in _UTF8_NAMES:
        raise ParseError(
            f"XML bodies are UTF-8, this one declares {declared[1].decode('ascii', 'replace')}",
            code="xml.encoding",
            line=1,
        )


_DECLARATION = re.compile(rb"<\?xml[ \t\r\n]")


def _check_prolog(data: bytes) -> None:
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ParseError(
            "DTDs and entity declarations are not accepted",
            code="xml.forbidden-construct",
            line=_line_of(
                data, data.find(b"<!DOCTYPE") if b"<!DOCTYPE" in data else data.find(b"<!ENTITY")
            ),
        )
    start = 0
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    # The XML declaration is "<?xml" and a space; "<?xml-stylesheet …?>" is a PI like any other.
    if _DECLARATION.match(head):
        start = len(data) - len(head) + head.find(b"?>") + 2
    found = data.find(b"<?", start)
    if found != -1:
        raise ParseError(
            "processing instructions are not accepted",
            code="xml.forbidden-construct",
            line=_line_of(data, found),
        )


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, max(offset, 0)) + 1


# XInclude (both namespaces libxml2 knows): the hub never processes it, and refuses a document
# that so much as declares it. A namespace name cannot be spelled without "XInclude" in the bytes
# unless a declaration writes it with character references: only then is the tree searched.
_XINCLUDE_NAMESPACES = ("http://www.w3.org/2001/XInclude", "http://www.w3.org/2003/XInclude")
_NS_DECLARATION_WITH_REFERENCE = re.compile(rb"""xmlns(?::[^\s=]*)?\s*=\s*(?:"[^"&]*&|'[^'&]*&)""")
_XINCLUDE_PROBE = etree.XPath("//namespace::*[. = $a or . = $b]/..")
_COUNT_ELEMENTS = etree.XPath("count(//*)")
# Text nodes and attribute values of more than $n characters.
_LONG_TEXT = etree.XPath("//text()[string-length() > $n] | //@*[string-length() > $n]")
_long_runs: dict[int, re.Pattern[bytes]] = {}


def _pattern(cache: dict[int, re.Pattern[bytes]], template: bytes, count: int) -> re.Pattern[bytes]:
    pattern = cache.get(count)
    if pattern is None:
        pattern = cache[count] = re.compile(template % count)
    return pattern


def _check_xinclude(data: bytes, root: etree._Element) -> None:
    if b"XInclude" not in data and not _NS_DECLARATION_WITH_REFERENCE.search(data):
        return
    found = cast(
        list[etree._Element],
        _XINCLUDE_PROBE(root, a=_XINCLUDE_NAMESPACES[0], b=_XINCLUDE_NAMESPACES[1]),
    )
    if found:
        raise ParseError(
            "XInclude is not accepted (its namespace is declared)",
            code="xml.forbidden-construct",
            line=cast(int | None, found[0].sourceline),
        )


def _suspects(data: bytes, limits: ParserLimits) -> tuple[bool, bool]:
    """Whether the body could hold an element over the attribute limit, and whether it could
    hold a text or attribute value over the text limit: one pass over the bytes.

    A start tag runs to the next "<" (no attribute value may hold one), and each of its
    attributes and namespace declarations takes at least five bytes (` a=""`) and one "=". Decoded
    text is never longer in UTF-8 than the bytes that wrote it (a reference is longer than its
    character), and no text or attribute value holds a "<" outside a CDATA section (before the
    first "<" there is only the prolog's white space). So only a run of bytes after a "<" long
    enough for either can be at fault, and such runs are few: the tree is walked only for them,
    or when the body has CDATA. (A comment may hold "<": its length is bounded by the body's.)
    """
    max_attributes, max_text = limits.max_attributes, limits.max_text_bytes
    threshold = min(5 * (max_attributes + 1), max_text + 1)
    attributes = text = False
    if len(data) <= threshold:
        return attributes, text
    for run in _pattern(_long_runs, rb"<[^<]{%d,}", threshold).finditer(data):
        start, end = run.span()
        attributes = attributes or data.count(b"=", start, end) > max_attributes
        text = text or end - start > max_text
        if attributes and text:
            break
    return attributes, text or (len(data) > max_text and b"<![CDATA[" in data)


def _check_attributes(root: etree._Element, limit: int) -> None:
    for element in root.iter(etree.Element):  # elements only (≤ max_elements of them)
        parent = element.getparent()
        declared = element.nsmap.items() - (parent.nsmap.items() if parent is not None else set())
        if len(element.attrib) + len(declared) > limit:
            raise ParseError(
                f"an element with {len(element.attrib) + len(declared)} attributes and namespace"
                f" declarations (at most {limit})",
                code="xml.too-many-attributes",
                line=cast(int | None, element.sourceline),
            )


def _check_text(root: etree._Element, limit: int) -> None:
    # Smart strings: each knows its element (a character takes at most four bytes).
    found = cast(list[etree._ElementUnicodeResult], _LONG_TEXT(root, n=limit // 4))
    for value in found:
        size = len(value.encode("utf-8"))
        if size > limit:
            where = value.getparent()
            raise ParseError(
                f"a text or attribute value of {size} bytes (at most {limit})",
                code="xml.text-too-large",
                line=cast(int | None, where.sourceline) if where is not None else None,
            )


def parse_xml(data: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> etree._Element:
    """Parse untrusted XML bytes into an element, or raise a ``ParseError`` with the line."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(f"body of {len(data)} bytes exceeds {limits.max_bytes}")
    _check_encoding(data)
    _check_prolog(data)
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if isinstance(exc.lineno, int) else None
        if "Excessive depth" in (exc.msg or ""):  # libxml2's own bound (256), below ours or not
            raise ParseError(
                f"XML nested deeper than {min(limits.max_depth, 256)}",
                code="xml.too-deep",
                line=line,
            ) from exc
        raise ParseError(f"malformed XML: {exc.msg}", line=line) from exc
    # Belt and braces: a document type of any kind is refused, however it got there.
    if root.getroottree().docinfo.doctype:  # type: ignore[union-attr]
        raise ParseError("DTDs are not accepted", code="xml.forbidden-construct")
    _check_xinclude(data, root)
    if _depth_probe(limits.max_depth)(root):
        raise ParseError(f"XML nested deeper than {limits.max_depth}", code="xml.too-deep")
    # The smallest element, <a/>, takes four bytes.
    if len(data) > 4 * limits.max_elements:
        count = int(cast(float, _COUNT_ELEMENTS(root)))
        if count > limits.max_elements:
            raise ParseError(
                f"{count} XML elements (at most {limits.max_elements})",
                code="xml.too-many-elements",
            )
    many_attributes, long_text = _suspects(data, limits)
    if many_attributes:
        _check_attributes(root, limits.max_attributes)
    if long_text:
        _check_text(root, limits.max_text_bytes)
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
        value = _collapsed(raw) if raw is not None else ""
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


def _collapsed(raw: Any) -> str:
    """An RFC 2231 parameter value as text; one naming a charset Python cannot even look up
    (``action*=\x00…''x``) is taken as its raw text, never an exception."""
    try:
        return collapse_rfc2231_value(raw)
    except (ValueError, LookupError):
        return str(raw[2] if isinstance(raw, tuple) and len(raw) == 3 else raw)


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


def _numbers(limit: int) -> tuple[Any, Any]:
    """The decoder's hooks for integer and other number literals: a literal of more than
    ``limit`` characters, or one whose positional form would have more than ``limit`` digits
    (``1e999999``, ``1e-999999``: the XML form of a number is positional), is refused."""

    def too_large(text: str) -> ParseError:
        shown = text if len(text) <= 24 else f"{text[:12]}…{text[-8:]} ({len(text)} characters)"
        return ParseError(
            f"the number {shown} is too large (at most {limit} digits)",
            code="json.number-too-large",
        )

    def integer(text: str) -> int:
        if len(text) > limit:
            raise too_large(text)
        return int(text)

    def decimal(text: str) -> Decimal:
        if len(text) > limit:
            raise too_large(text)
        try:
            value = Decimal(text)
        except ArithmeticError:  # an exponent beyond what Decimal represents
            raise too_large(text) from None
        if not -limit <= value.adjusted() <= limit:
            raise too_large(text)
        return value

    return integer, decimal


def parse_json(data: bytes, limits: ParserLimits = DEFAULT_LIMITS) -> Any:
    """Parse untrusted JSON bytes (UTF-8). Depth beyond ``limits.max_depth`` is refused by the
    schema binding, which walks every value; what is deeper than the decoder's own guard is refused
    here."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(f"body of {len(data)} bytes exceeds {limits.max_bytes}")
    integer, decimal = _numbers(limits.max_number_digits)
    try:
        text = data.decode("utf-8-sig")  # a byte order mark is tolerated (RFC 8259 § 8.1)
        # Decimal, not float: an amount keeps every digit its sender wrote.
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constant,
            parse_float=decimal,
            parse_int=integer,
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
