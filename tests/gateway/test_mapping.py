"""The mapping engine: golden pairs from disk, load-time checks that catch broken files, code lists
enforced at run time, and the JSON binding agreeing with xmlschema."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import ConfigurationError, MappingError
from gateway.mapping import CompiledMapping, MappingSet, check_golden
from gateway.xml import parse_xml

HOME = Path(__file__).resolve().parents[2]
MAPPINGS = MappingSet.load(HOME)


@pytest.mark.parametrize(
    "mapping",
    sorted(MAPPINGS.mappings.values(), key=lambda m: str(m.path)),
    ids=lambda m: f"{m.party}/{m.direction}/{m.message_type}",
)
def test_golden_pair(mapping: CompiledMapping) -> None:
    assert check_golden(MAPPINGS, mapping) == []


def test_a_party_type_without_a_mapping_stops_the_hub_at_start() -> None:
    import dataclasses

    from gateway.config import load_parties
    from gateway.errors import ConfigurationError
    from gateway.hub import _check_coverage

    parties = load_parties(HOME / "parties.toml")
    _check_coverage(parties, MAPPINGS)  # the repository is complete
    ibz = dataclasses.replace(
        parties["be-fed-ibz"], receives=parties["be-fed-ibz"].receives | {"workPermit.submitted"}
    )
    broken = dataclasses.replace(parties, parties={**parties.parties, "be-fed-ibz": ibz})
    with pytest.raises(ConfigurationError, match=r"be-fed-ibz receives workPermit\.submitted"):
        _check_coverage(broken, MAPPINGS)


def test_repeated_text_elements_all_travel() -> None:
    mapping = MAPPINGS.get("be-fed-ibz", "to-canonical", "residence.decided")
    source = parse_xml((mapping.path.parent / "residence.decided.input.xml").read_bytes())
    out = mapping.apply(
        source,
        {
            "sender": "be-fed-ibz",
            "receiver": "",
            "traceId": "t",
            "receivedAt": "2026-11-27T10:00:00Z",
        },
    )
    reasons = out.findall(".//{urn:be:guichet:canonical:1}reason")
    assert len(reasons) == 2


def test_unmapped_code_is_an_error_never_a_pass_through() -> None:
    mapping = MAPPINGS.get("be-fed-ibz", "to-canonical", "residence.decided")
    raw = (mapping.path.parent / "residence.decided.input.xml").read_bytes()
    source = parse_xml(raw)
    decision = source.find("{urn:be:fgov:ibz:guichet:1}Decision")
    assert decision is not None
    decision.set("code", "99")  # not an annex the code list knows
    with pytest.raises(MappingError) as caught:
        mapping.apply(
            source,
            {
                "sender": "be-fed-ibz",
                "receiver": "",
                "traceId": "t",
                "receivedAt": "2026-11-27T10:00:00Z",
            },
        )
    assert caught.value.code == "mapping.unmapped-code"
    assert "'99'" in caught.value.detail
    assert caught.value.path


# --- load-time checks ---------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    shutil.copytree(HOME / "schemas", tmp_path / "schemas")
    shutil.copytree(HOME / "mappings", tmp_path / "mappings")
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


IBZ_RESIDENCE = "mappings/be-fed-ibz/to-canonical/residence.decided.toml"


def _first_rule_from(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith('from = "') and "$" not in line:
            return line
    raise AssertionError("no source path")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("source path", "in {urn:be:fgov:ibz:guichet:1}"),
        ("required target", "no rule produces it"),
        ("code list entry", "has no entry for"),
        ("code list value", "which the target does not allow"),
        ("code list reversal", "back to both"),
        ("unknown key", "unknown keys"),
    ],
)
def test_broken_mappings_are_refused_at_load_naming_file_and_rule(
    home: Path, breakage: str, message: str
) -> None:
    ibz = home / IBZ_RESIDENCE
    codelists = home / "mappings/be-fed-ibz/codelists.toml"
    if breakage == "source path":
        line = _first_rule_from(ibz)
        _edit(ibz, line, line[:-1] + 'Inexistant"')
    elif breakage == "required target":
        _edit(
            ibz, 'to = "c:residenceDecided/c:decisionDate"', 'to = "c:residenceDecided/c:validFrom"'
        )
    elif breakage == "code list entry":
        _edit(codelists, '"46" = ', '"4600" = ')
    elif breakage == "code list value":
        _edit(codelists, '"46" = "granted"', '"46" = "maybe"')
    elif breakage == "code list reversal":
        _edit(
            codelists,
            'RECEVABLE = "admissible"',
            'RECEVABLE = "admissible"\nPROVISOIRE = "admissible"',
        )
    else:
        _edit(
            ibz,
            'to = "c:residenceDecided/c:decisionDate"',
            'to = "c:residenceDecided/c:decisionDate"\nfrm = "x"',
        )
    with pytest.raises(ConfigurationError) as caught:
        MappingSet.load(home)
    assert message in str(caught.value)
    assert "be-fed-ibz" in str(caught.value)


# --- the JSON binding -------------------------------------------------------------------------

JSON_FILES = sorted(
    list((HOME / "mappings").rglob("*.json"))
    + [p for p in (HOME / "examples").rglob("*.json") if "invalid" not in p.name]
)


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(HOME)))
def test_json_binding_agrees_with_xmlschema(path: Path) -> None:
    party_id = path.relative_to(HOME).parts[1]
    party = MAPPINGS.party(party_id)
    element = party.read(path.read_bytes())
    party.schema.validate(element)  # the XML form is valid against the party's XSD
    # An independent decoder: xmlschema, loaded afresh from the XSD file.
    components = xmlschema.XMLSchema10(str(next(iter(party.schema.files.values())).path))
    decoded = components.to_dict(element, decimal_type=float, strip_namespaces=True)
    assert decoded == json.loads(path.read_bytes())
    assert party.binding is not None
    assert party.binding.to_json(element) == json.loads(path.read_bytes())


def test_json_validation_error_is_a_json_pointer() -> None:
    from gateway.config import load_parties
    from gateway.errors import SchemaValidationError
    from gateway.pipeline import InboundMessage, validate
    from gateway.signatures import SignatureVerifier
    from gateway.xml import DEFAULT_LIMITS

    body = (HOME / "examples/be-platform/application.submitted.invalid-schema.json").read_bytes()
    with pytest.raises(SchemaValidationError) as caught:
        validate(
            InboundMessage("be-platform", body, "application/json", "rest", "t", "now"),
            MAPPINGS,
            DEFAULT_LIMITS,
            SignatureVerifier(None, load_parties(HOME / "parties.toml"), required=False),
        )
    assert caught.value.path is not None
    assert caught.value.path.startswith("/application/")
    pointer = caught.value.path.strip("/").split("/")
    value = json.loads(body)
    for step in pointer:
        value = value[int(step)] if isinstance(value, list) else value[step]
    assert isinstance(value, str)  # the pointer leads to the faulty value in the body


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)


@settings(max_examples=50, deadline=None)
@given(title=_text, city=_text, extra_sites=st.integers(min_value=0, max_value=3))
def test_json_binding_round_trips(title: str, city: str, extra_sites: int) -> None:
    party = MAPPINGS.party("be-platform")
    assert party.binding is not None
    body = json.loads((HOME / "examples/be-platform/application.submitted.json").read_bytes())
    body["application"]["position"]["jobTitle"] = title
    sites = body["application"]["position"]["worksites"]
    sites.extend(dict(sites[0], city=city) for _ in range(extra_sites))
    element = party.binding.to_xml(body)
    assert party.binding.to_json(element) == body


def test_xmlschema_components_available() -> None:
    assert isinstance(
        next(iter(MAPPINGS.party("be-platform").schema.files.values())).components,
        xmlschema.XMLSchema10,
    )


def test_json_binding_keeps_carriage_returns_and_decimal_digits() -> None:
    from decimal import Decimal

    party = MAPPINGS.party("be-platform")
    assert party.binding is not None
    body = json.loads((HOME / "examples/be-platform/application.submitted.json").read_bytes())
    body["application"]["position"]["jobTitle"] = "line one\r\nline two"
    body["application"]["position"]["monthlyGrossSalaryEur"] = Decimal("5400.25")
    body["application"]["position"]["hoursPerWeek"] = Decimal("1E+1")
    element = party.binding.to_xml(body)
    position = element.find("application/position")
    assert position is not None
    assert position.findtext("jobTitle") == "line one\r\nline two"
    assert position.findtext("monthlyGrossSalaryEur") == "5400.25"
    assert position.findtext("hoursPerWeek") == "10"  # no exponent: XSD decimals have none
    party.schema.validate(element)
