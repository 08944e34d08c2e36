"""Property-based fuzzing of the mapping engine: every golden input, with new values in its leaves
drawn from their schema types (patterns, enumerations, dates, decimals, lengths, free text of any
script), either maps to a message valid against the target schema or is refused with a
GatewayError that has a code. Where a party has both directions of a type, party → canonical →
party gives back every field the two mappings copy. test_roundtrip.py puts new values in the
mapped fields only; here every leaf of the source moves, the ones no rule reads included.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lxml import etree

from gateway.errors import PROBLEMS, GatewayError
from gateway.mapping import CompiledMapping
from gateway.namespaces import CANONICAL_NS
from tests.gateway.test_roundtrip import MAPPINGS, _params, _source

HOME = Path(__file__).resolve().parents[2]
MAPPING_LIST = sorted(MAPPINGS.mappings.values(), key=lambda m: str(m.path))
FUZZ = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Strings the hub must carry unchanged: XML's special characters, quotes, emoji, right-to-left
# text and its controls, combining marks, characters beyond the BMP.
TRICKY = [
    "&",
    "<b>&amp;</b>",
    "a < b > c",
    "\"double\" 'single'",
    "]]>",
    "😀👩‍👩‍👧",
    "שלום עולם",
    "مرحبا",
    "\u202eevil\u202c",
    "e\u0301 n\u0303",
    "Å Ω ß İ ﬁ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "$sender {concat('a')}",
    "&#38; %26",
]
_XML_CHAR = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn", "Co", "Z"))
_WORDS = st.lists(st.text(_XML_CHAR, min_size=1, max_size=10), min_size=1, max_size=3).map(" ".join)
FREE_TEXT = st.sampled_from(TRICKY) | _WORDS


def _dates() -> st.SearchStrategy[date]:
    return st.dates(min_value=date(1900, 1, 1), max_value=date(2199, 12, 31))


def _xml_compatible(text: str) -> bool:
    return all(
        c in "\t\n\r" or (" " <= c < "\ud800") or ("\ue000" <= c <= "\ufffd") or c > "\uffff"
        for c in text
    )


def _simple_values(xsd_type: Any) -> st.SearchStrategy[str]:
    return _lexical_values(xsd_type).filter(_xml_compatible)


def _lexical_values(xsd_type: Any) -> st.SearchStrategy[str]:
    """Values of one XSD simple type, in its lexical space (one the type refuses after all is
    taken back by the caller)."""
    enumeration = getattr(xsd_type, "enumeration", None)
    if enumeration:
        return st.sampled_from([str(v) for v in enumeration])
    patterns = getattr(xsd_type, "patterns", None)
    if patterns is not None and patterns.regexps:
        return st.from_regex(patterns.regexps[0], fullmatch=True)
    primitive = xsd_type.primitive_type.local_name if xsd_type.is_simple() else "string"
    if primitive == "date":
        return _dates().map(date.isoformat)
    if primitive == "dateTime":
        return st.builds(
            lambda d, s, tz: (
                datetime.combine(d, datetime.min.time(), timezone(timedelta(minutes=tz)))
                + timedelta(seconds=s)
            ).isoformat(),
            _dates(),
            st.integers(0, 86399),
            st.integers(-14 * 4, 14 * 4).map(lambda q: q * 15),
        )
    if primitive == "boolean":
        return st.sampled_from(["true", "false", "1", "0"])
    if primitive == "decimal":  # the integers too
        return st.decimals(min_value=-(10**9), max_value=10**9, allow_nan=False, places=2).map(
            lambda d: format(d, "f")
        ) | st.integers(-(10**6), 10**6).map(str)
    if primitive == "duration":
        return st.builds(lambda y, m: f"P{y}Y{m}M", st.integers(0, 9), st.integers(0, 11))
    lo = getattr(xsd_type, "min_length", None) or 1
    hi = getattr(xsd_type, "max_length", None) or 40
    return FREE_TEXT.filter(lambda t: lo <= len(t) <= hi) | st.text(
        _XML_CHAR, min_size=lo, max_size=min(hi, 30)
    )


def _child_decls(decl: Any) -> dict[str, Any]:
    xsd_type = decl.type
    if xsd_type.is_simple() or xsd_type.has_simple_content():
        return {}
    return {child.name: child for child in xsd_type.content.iter_elements()}


def _simple_type(decl: Any) -> Any:
    xsd_type = decl.type
    if xsd_type.is_simple():
        return xsd_type
    if xsd_type.has_simple_content():
        return xsd_type.content
    return None


def _perturb(
    element: etree._Element, decl: Any, data: st.DataObject, path: str, valid: Callable[[], bool]
) -> None:
    """New values in some of the leaves (texts and attributes), drawn from their types; one the
    whole message is not valid with (as libxml2 sees it) is taken back."""
    xsd_type = decl.type
    for name, value in list(element.attrib.items()):
        attribute = xsd_type.attributes.get(name) if not xsd_type.is_simple() else None
        if attribute is not None and data.draw(st.booleans(), label=f"{path}/@{name}?"):
            element.set(name, data.draw(_simple_values(attribute.type), label=f"{path}/@{name}"))
            if not valid():
                element.set(name, value)
    simple = _simple_type(decl)
    if simple is not None:
        if data.draw(st.booleans(), label=f"{path}?"):
            old = element.text
            element.text = data.draw(_simple_values(simple), label=path)
            if not valid():
                element.text = old
        return
    children = _child_decls(decl)
    for child in element:
        if isinstance(child.tag, str) and child.tag in children:
            local = etree.QName(child).localname
            _perturb(child, children[child.tag], data, f"{path}/{local}", valid)


def _perturbed(mapping: CompiledMapping, data: st.DataObject) -> etree._Element | None:
    source = copy.deepcopy(_source(mapping))
    validator = mapping.source_schema.file_for(source).lxml
    decl = mapping.source_schema.element(mapping.source_root)
    _perturb(source, decl, data, "", lambda: validator.validate(source))
    try:
        mapping.source_schema.validate(source)
    except GatewayError:
        # A constraint across fields (an identity constraint, a choice): not this test's business.
        event("source invalid after perturbation")
        return None
    return source


def _mapped(mapping: CompiledMapping, source: etree._Element) -> etree._Element | None:
    """Map a valid source: the result is valid against the target schema, or the mapping
    refuses with a documented code."""
    try:
        produced = mapping.apply(source, _params(mapping, source))
    except GatewayError as exc:
        assert exc.code in PROBLEMS, exc.code
        event(f"refused: {exc.code}")
        return None
    mapping.target_schema.validate(produced)
    return produced


@pytest.mark.parametrize(
    "mapping", MAPPING_LIST, ids=lambda m: f"{m.party}/{m.direction}/{m.message_type}"
)
@FUZZ
@given(data=st.data())
def test_valid_messages_map_to_valid_messages(
    mapping: CompiledMapping, data: st.DataObject
) -> None:
    source = _perturbed(mapping, data)
    if source is not None:
        _mapped(mapping, source)


BOTH_WAYS = sorted(
    (party, message_type)
    for (party, direction, message_type) in MAPPINGS.mappings
    if direction == "to-canonical" and (party, "from-canonical", message_type) in MAPPINGS.mappings
)


@pytest.mark.parametrize(("party", "message_type"), BOTH_WAYS, ids=str)
@FUZZ
@given(data=st.data())
def test_party_to_canonical_and_back_keeps_every_copied_field(
    party: str, message_type: str, data: st.DataObject
) -> None:
    inbound = MAPPINGS.get(party, "to-canonical", message_type)
    outbound = MAPPINGS.get(party, "from-canonical", message_type)
    source = _perturbed(inbound, data)
    if source is None:
        return
    canonical = _mapped(inbound, source)
    if canonical is None:
        return
    back = _mapped(outbound, canonical)
    assert back is not None
    namespaces = {**MAPPINGS.party(party).namespaces, "c": CANONICAL_NS}
    both = [
        path
        for canonical_path, path in inbound.fields.items()
        if outbound.fields.get(canonical_path) == path
    ]
    assert both
    for path in both:
        sent = source.xpath(f"string({path})", namespaces=namespaces)
        assert back.xpath(f"string({path})", namespaces=namespaces) == sent, path


def _free_text_fields(mapping: CompiledMapping) -> list[str]:
    """Source paths of the plain rules copying a free string (no code list, no pattern, no
    enumeration) that the golden input holds once as a leaf."""
    source = _source(mapping)
    namespaces = {**MAPPINGS.party(mapping.party).namespaces, "c": CANONICAL_NS}
    found = []
    for canonical, party_path in mapping.fields.items():
        if canonical in mapping.codes:
            continue
        src = party_path if mapping.direction == "to-canonical" else canonical
        nodes = source.xpath(src, namespaces=namespaces)
        if not isinstance(nodes, list) or len(nodes) != 1:
            continue
        node = nodes[0]
        if not isinstance(node, etree._Element) or len(node):
            continue
        found.append(src)
    return sorted(set(found))


FREE_TEXT_CASES = [(m, path) for m in MAPPING_LIST for path in _free_text_fields(m)]


@pytest.mark.parametrize(
    "mapping",
    [m for m in MAPPING_LIST if any(m is n for n, _ in FREE_TEXT_CASES)],
    ids=lambda m: f"{m.party}/{m.direction}/{m.message_type}",
)
def test_xml_special_and_unicode_strings_are_copied_unchanged(mapping: CompiledMapping) -> None:
    namespaces = {**MAPPINGS.party(mapping.party).namespaces, "c": CANONICAL_NS}
    paths = [p for m, p in FREE_TEXT_CASES if m is mapping]
    targets = {
        src: dst
        for canonical, party_path in mapping.fields.items()
        for src, dst in [
            (party_path, canonical)
            if mapping.direction == "to-canonical"
            else (canonical, party_path)
        ]
    }
    copied = 0
    for path in paths:
        for text in TRICKY:
            source = copy.deepcopy(_source(mapping))
            source.xpath(path, namespaces=namespaces)[0].text = text
            try:
                mapping.source_schema.validate(source)
            except GatewayError:
                continue  # a pattern or a length this text does not fit
            produced = mapping.apply(source, _params(mapping, source))
            assert produced.xpath(f"string({targets[path]})", namespaces=namespaces) == text
            copied += 1
    if not copied:
        pytest.skip("no free-text field of this mapping takes these strings")
