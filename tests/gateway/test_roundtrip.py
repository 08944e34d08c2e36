"""Every mapped field travels: for every party and type, Hypothesis puts new values in the fields
a mapping copies (free text where the field is free, any code of its code list where it has one)
and checks that each arrives where the mapping says, through its code list. Code lists are
bijections (checked at load), so party → canonical → party gives back every mapped field; where a
party has both directions of a type, that round trip is run literally too.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from gateway.mapping import GOLDEN_PARAMS, CompiledMapping, MappingSet, golden_pairs
from gateway.namespaces import CANONICAL_NS
from gateway.xml import parse_xml

HOME = Path(__file__).resolve().parents[2]
MAPPINGS = MappingSet.load(HOME)

# Text a back office may write in a free field: letters of many scripts, digits, punctuation and
# the characters XML escapes, words separated by single spaces (the hub does not promise to keep
# leading, trailing or repeated blanks).
_WORD = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cc", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")
    ),
    min_size=1,
    max_size=12,
)
TEXT = st.lists(_WORD, min_size=1, max_size=3).map(" ".join)


def _namespaces(mapping: CompiledMapping) -> dict[str, str]:
    return {**MAPPINGS.party(mapping.party).namespaces, "c": CANONICAL_NS}


def _source(mapping: CompiledMapping) -> etree._Element:
    pair = golden_pairs(mapping)
    assert pair is not None, f"{mapping.path} has no golden pair"
    body = pair[0].read_bytes()
    if mapping.direction == "to-canonical":
        return MAPPINGS.party(mapping.party).read(body)
    return parse_xml(body)


def _params(mapping: CompiledMapping, source: etree._Element) -> dict[str, str]:
    if mapping.direction == "to-canonical":
        return {**GOLDEN_PARAMS, "sender": mapping.party, "receiver": ""}
    sender = source.findtext(f"{{{CANONICAL_NS}}}envelope/{{{CANONICAL_NS}}}source") or ""
    return {**GOLDEN_PARAMS, "sender": sender, "receiver": mapping.party}


def _set(node: object, value: str) -> None:
    if isinstance(node, etree._ElementUnicodeResult) and node.is_attribute:
        parent = node.getparent()
        assert parent is not None
        parent.set(str(node.attrname), value)
    else:
        assert isinstance(node, etree._Element)
        node.text = value


def _travelling(
    mapping: CompiledMapping, source: etree._Element
) -> dict[str, list[tuple[str, str]]]:
    """Source path → [(target path, canonical path)] of the plain rules that copy a value the
    golden input holds once (a source may feed several targets: the annex number gives both the
    outcome and the annex)."""
    namespaces = _namespaces(mapping)
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for canonical, party in mapping.fields.items():
        src, dst = (party, canonical) if mapping.direction == "to-canonical" else (canonical, party)
        nodes = source.xpath(src, namespaces=namespaces)
        if not isinstance(nodes, list) or len(nodes) != 1:
            continue
        node = nodes[0]
        if isinstance(node, etree._Element) and len(node):
            continue  # a structure, not a value
        found[src].append((dst, canonical))
    return found


MAPPING_LIST = sorted(MAPPINGS.mappings.values(), key=lambda m: str(m.path))


@pytest.mark.parametrize(
    "mapping", MAPPING_LIST, ids=lambda m: f"{m.party}/{m.direction}/{m.message_type}"
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_mapped_field_arrives(mapping: CompiledMapping, data: st.DataObject) -> None:
    golden = _source(mapping)
    fields = _travelling(mapping, golden)
    assert fields, f"{mapping.path}: no field of its golden input travels"
    source = copy.deepcopy(golden)
    namespaces = _namespaces(mapping)
    expected: dict[str, str] = {}
    for src, targets in sorted(fields.items()):
        tables = [mapping.codes[c] for _, c in targets if c in mapping.codes]
        if tables:
            choices = sorted(set.intersection(*(set(t) for t in tables)))
            assert choices, f"{mapping.path}: {src} feeds code lists with no common value"
            value = data.draw(st.sampled_from(choices), label=src)
        else:
            value = data.draw(TEXT, label=src)
        nodes = source.xpath(src, namespaces=namespaces)
        assert isinstance(nodes, list)
        _set(nodes[0], value)
        for dst, canonical in targets:
            table = mapping.codes.get(canonical)
            expected[dst] = table[value] if table is not None else value
    produced = mapping.apply(source, _params(mapping, source))
    for dst, value in expected.items():
        assert produced.xpath(f"string({dst})", namespaces=namespaces) == value, dst


BOTH_WAYS = sorted(
    (party, message_type)
    for (party, direction, message_type) in MAPPINGS.mappings
    if direction == "to-canonical" and (party, "from-canonical", message_type) in MAPPINGS.mappings
)


@pytest.mark.parametrize(("party", "message_type"), BOTH_WAYS, ids=str)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_party_to_canonical_and_back_gives_the_same_fields(
    party: str, message_type: str, data: st.DataObject
) -> None:
    inbound = MAPPINGS.get(party, "to-canonical", message_type)
    outbound = MAPPINGS.get(party, "from-canonical", message_type)
    namespaces = _namespaces(inbound)
    source = copy.deepcopy(_source(inbound))
    fields = _travelling(inbound, source)
    written: dict[str, str] = {}
    for src, targets in sorted(fields.items()):
        tables = [inbound.codes[c] for _, c in targets if c in inbound.codes]
        if tables:
            value = data.draw(st.sampled_from(sorted(set.intersection(*(set(t) for t in tables)))))
        else:
            value = data.draw(TEXT)
        nodes = source.xpath(src, namespaces=namespaces)
        assert isinstance(nodes, list)
        _set(nodes[0], value)
        written[src] = value
    canonical = inbound.apply(source, _params(inbound, source))
    back = outbound.apply(canonical, _params(outbound, canonical))
    kept = {
        src: value
        for src, value in written.items()
        if all(c in outbound.fields for _, c in fields[src])
    }
    assert kept, f"{party} {message_type}: no field goes both ways"
    for src, value in kept.items():
        assert back.xpath(f"string({src})", namespaces=namespaces) == value, src
