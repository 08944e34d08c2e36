"""JSON bodies bound to a party's XSD: the JSON object is the content of one global element.

The binding is derived once, at load, from the xmlschema components of the party's XSD: for every
element its JSON key (the local name), whether it repeats (a JSON array) and the JSON kind of its
value. At run time a body becomes its XML form in one walk, the XML form is validated by libxml2
against the same XSD, and an outbound XML form becomes JSON by the reverse walk. A validation
error's XML path is given back as a JSON Pointer (RFC 6901) into the body the sender wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal
from xml.sax.saxutils import escape as xml_escape

from lxml import etree

from gateway.errors import ConfigurationError, ParseError
from gateway.xml import ParserLimits, parse_xml

__all__ = ["JsonBinding"]

Kind = Literal["object", "string", "integer", "number", "boolean"]

_XS = "{http://www.w3.org/2001/XMLSchema}"
_INTEGER_TYPES = {
    f"{_XS}{n}"
    for n in (
        "integer",
        "nonNegativeInteger",
        "positiveInteger",
        "nonPositiveInteger",
        "negativeInteger",
        "long",
        "int",
        "short",
        "byte",
        "unsignedLong",
        "unsignedInt",
        "unsignedShort",
        "unsignedByte",
    )
}
_NUMBER_TYPES = {f"{_XS}decimal", f"{_XS}float", f"{_XS}double"}


@dataclass
class _Node:
    key: str
    tag: str
    many: bool
    kind: Kind
    children: dict[str, _Node] = field(default_factory=dict)


def _kind_of(simple_type: Any) -> Kind:
    current = simple_type
    while current is not None:
        name = getattr(current, "name", None)
        if name in _INTEGER_TYPES:
            return "integer"
        if name in _NUMBER_TYPES:
            return "number"
        if name == f"{_XS}boolean":
            return "boolean"
        current = getattr(current, "base_type", None)
    return "string"


def _node(decl: Any, depth: int = 0) -> _Node:
    if depth > 64:
        raise ConfigurationError(f"element {decl.name}: recursive types cannot be bound to JSON")
    name: str = decl.name
    key = etree.QName(name).localname
    many = decl.max_occurs is None or decl.max_occurs > 1
    xsd_type = decl.type
    if xsd_type.is_simple():
        return _Node(key, name, many, _kind_of(xsd_type))
    if xsd_type.has_simple_content():
        if xsd_type.attributes:
            raise ConfigurationError(f"element {name}: attributes cannot be bound to JSON")
        return _Node(key, name, many, _kind_of(xsd_type.content))
    if xsd_type.attributes:
        raise ConfigurationError(f"element {name}: attributes cannot be bound to JSON")
    node = _Node(key, name, many, "object")
    for child in xsd_type.content.iter_elements():
        node.children[etree.QName(child.name).localname] = _node(child, depth + 1)
    return node


_ESCAPES = {"\r": "&#13;"}
# The XML form of a JSON body already within its limits: none of the XML limits applies to it.
_UNBOUNDED = ParserLimits(
    max_bytes=2**62, max_depth=1024, max_elements=2**62, max_attributes=2**62, max_text_bytes=2**62
)
_INDEX = re.compile(r"^(?P<name>[^\[]+)(?:\[(?P<index>\d+)\])?$")


class JsonBinding:
    """JSON ⇄ XML form of one global element of a party's XSD."""

    def __init__(self, root_decl: Any, max_depth: int = 48) -> None:
        self.root = _node(root_decl)
        self.max_depth = max_depth
        qname = etree.QName(self.root.tag)
        if any(child.tag != child.key for child in self.root.children.values()):
            # Local elements must be unqualified: the JSON keys are their names, nothing more.
            raise ConfigurationError(
                f"{self.root.tag}: JSON parties need unqualified local elements"
            )
        namespace = f' xmlns:p="{qname.namespace}"' if qname.namespace else ""
        prefix = "p:" if qname.namespace else ""
        self._open_root = f"<{prefix}{qname.localname}{namespace}>"
        self._close_root = f"</{prefix}{qname.localname}>"

    # -- JSON → XML ---------------------------------------------------------------------------
    def to_xml(self, value: Any) -> etree._Element:
        """The XML form of a JSON body. Written as text and parsed by libxml2 in one call, which
        is about twice as fast as building the tree node by node."""
        if not isinstance(value, dict):
            raise ParseError("the JSON body must be an object", code="json.wrong-kind", path="")
        parts = [self._open_root]
        self._fill(parts, self.root, value, "", 0)
        parts.append(self._close_root)
        try:
            # Size is bounded by the JSON body's limit already; depth by _fill.
            return parse_xml("".join(parts).encode(), _UNBOUNDED)
        except ParseError as exc:
            # Only text can be at fault: a character XML 1.0 cannot carry (NUL, most controls).
            raise ParseError(
                "a string holds a character XML cannot carry (a control character?)",
                code="json.malformed",
            ) from exc

    def _fill(
        self, parts: list[str], node: _Node, value: dict[str, Any], pointer: str, depth: int
    ) -> None:
        if depth > self.max_depth:
            raise ParseError("JSON nested too deeply", code="json.too-deep", path=pointer)
        children = node.children
        for key in value:
            if key not in children:
                raise ParseError(
                    f"member {key!r} is not part of {node.key}",
                    code="json.unknown-member",
                    path=f"{pointer}/{_escape(key)}",
                )
        for key, child in children.items():
            if key not in value:
                continue
            item = value[key]
            where = f"{pointer}/{_escape(key)}"
            if child.many:
                if not isinstance(item, list):
                    raise ParseError(f"{key} must be an array", code="json.wrong-kind", path=where)
                for index, entry in enumerate(item):
                    self._emit(parts, child, entry, f"{where}/{index}", depth)
            else:
                self._emit(parts, child, item, where, depth)

    def _emit(self, parts: list[str], node: _Node, value: Any, pointer: str, depth: int) -> None:
        kind = node.kind
        key = node.key
        if kind == "object":
            if not isinstance(value, dict):
                raise ParseError(f"{key} must be an object", code="json.wrong-kind", path=pointer)
            parts.append(f"<{key}>")
            self._fill(parts, node, value, pointer, depth + 1)
            parts.append(f"</{key}>")
            return
        if kind == "string":
            if not isinstance(value, str):
                raise ParseError(f"{key} must be a string", code="json.wrong-kind", path=pointer)
            # A carriage return is written as a reference: XML parsers turn a raw one into \n.
            text = xml_escape(value, _ESCAPES)
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise ParseError(
                    f"{key} must be true or false", code="json.wrong-kind", path=pointer
                )
            text = "true" if value else "false"
        else:
            if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
                raise ParseError(f"{key} must be a number", code="json.wrong-kind", path=pointer)
            # Positional notation, every digit kept: XSD decimals know no exponents.
            text = str(value) if isinstance(value, int) else format(Decimal(value), "f")
        parts.append(f"<{key}>{text}</{key}>")

    # -- XML → JSON ---------------------------------------------------------------------------
    def to_json(self, element: etree._Element) -> dict[str, Any]:
        return self._object(element, self.root)

    def _object(self, element: etree._Element, node: _Node) -> dict[str, Any]:
        result: dict[str, Any] = {}
        children = node.children
        for child in element:
            if not isinstance(child.tag, str):
                continue
            child_node = children[etree.QName(child).localname]
            value = self._value(child, child_node)
            if child_node.many:
                result.setdefault(child_node.key, []).append(value)
            else:
                result[child_node.key] = value
        return result

    def _value(self, element: etree._Element, node: _Node) -> Any:
        kind = node.kind
        if kind == "object":
            return self._object(element, node)
        text = (element.text or "").strip() if kind != "string" else (element.text or "")
        if kind == "boolean":
            return text in ("true", "1")
        if kind == "integer":
            return int(text)
        if kind == "number":
            number = float(text)
            return (
                int(number)
                if number.is_integer() and "." not in text and "e" not in text.lower()
                else number
            )
        return text

    # -- error places ---------------------------------------------------------------------------
    def pointer(self, xml_path: str | None) -> str | None:
        """Turn an lxml error path (``/p:root/a/b[2]/c``) into a JSON Pointer (``/a/b/1/c``)."""
        if not xml_path:
            return xml_path
        steps = [s for s in xml_path.split("/") if s][1:]
        node = self.root
        parts: list[str] = []
        for step in steps:
            match = _INDEX.match(step)
            if match is None:
                return xml_path
            local = match["name"].split(":")[-1]
            child = node.children.get(local)
            if child is None:
                return xml_path
            parts.append(_escape(local))
            if child.many:
                parts.append(str(int(match["index"] or 1) - 1))
            node = child
        return "/" + "/".join(parts) if parts else ""


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
