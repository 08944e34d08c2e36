"""The shared code lists of mappings/codelists/: the canonical lists agree with canonical.xsd,
labels exist in every language, the country list is a clean bijection, and a party may take the
country list whole; any fault stops the hub at load with the place of the fault."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.codelists import LANGUAGES, CanonicalLists, Countries
from gateway.config import load_parties
from gateway.errors import ConfigurationError, MappingError
from gateway.hub import _check_languages
from gateway.mapping import MappingSet, _codelist, _enumerations

HOME = Path(__file__).resolve().parents[2]
MAPPINGS = MappingSet.load(HOME)
LISTS = (HOME / "mappings/codelists/canonical.toml").read_text()


def test_every_canonical_list_is_its_schema_enumeration() -> None:
    enumerations = _enumerations(MAPPINGS.catalog)
    governed = {
        c.xsd_type: c for c in MAPPINGS.canonical_lists.lists.values() if c.xsd_type is not None
    }
    assert {"Category", "CardType", "Annex", "WorkOutcome", "ResidenceOutcome"} <= set(governed)
    for xsd_type, code_list in governed.items():
        assert list(code_list.values) == enumerations[xsd_type]
        for code in code_list.values:
            assert all(code_list.label(code, lang).strip() for lang in LANGUAGES), code


def test_a_list_that_drifts_from_the_schema_stops_the_load() -> None:
    drifted = LISTS.replace(
        'researcher = { en = "Researcher"', 'scientist = { en = "Researcher"', 1
    )
    lists = CanonicalLists.parse(drifted, "canonical.toml")
    with pytest.raises(
        ConfigurationError, match=r"\[categories\].*\['researcher'\].*\['scientist'\]"
    ):
        lists.check(_enumerations(MAPPINGS.catalog), "canonical.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (LISTS.replace('version = "2026.11"', ""), "needs a version"),
        (LISTS.replace(', de = "Blaue Karte EU"', ""), "euBlueCard: a label in each of"),
        (LISTS[: LISTS.index("[languages]")], r"needs the \[languages\] list"),
        (LISTS.replace('type = "Category"', 'typ = "Category"'), r"unknown keys \['typ'\]"),
        (LISTS + "\n[empty]\ntype = 'Sex'\n", r"\[empty\] needs values"),
    ],
)
def test_a_malformed_list_file_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        CanonicalLists.parse(text, "canonical.toml")


COUNTRIES = (
    "iso3,nis,name_en,name_fr,name_nl\n"
    "BEL,150,Belgium,Belgique,België\n"
    "FRA,111,France,France,Frankrijk\n"
)


def test_countries_map_nis_codes_to_iso() -> None:
    countries = Countries.parse(COUNTRIES, "countries.csv")
    assert countries.table("nis") == {"150": "BEL", "111": "FRA"}
    assert countries.table("iso3") == {"BEL": "BEL", "FRA": "FRA"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (COUNTRIES.replace("iso3,nis", "iso,nis"), "the columns must be"),
        (COUNTRIES + "NLD,111,Netherlands,Pays-Bas,Nederland\n", "nis 111 appears twice"),
        (COUNTRIES + "BEL,129,Netherlands,Pays-Bas,Nederland\n", "iso3 BEL appears twice"),
        (COUNTRIES + "nld,129,Netherlands,Pays-Bas,Nederland\n", "ISO code 'nld'"),
        (COUNTRIES + "NLD,12,Netherlands,Pays-Bas,Nederland\n", "NIS code '12'"),
        (COUNTRIES + "NLD,129,Netherlands\n", "line 4 has 3 fields"),
        ("# a comment\n" + COUNTRIES + "NLD,129,Netherlands\n", "line 5 has 3 fields"),
    ],
)
def test_a_malformed_country_list_is_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Countries.parse(text, "countries.csv")


def test_a_party_takes_the_country_list_whole() -> None:
    countries = Countries.parse(COUNTRIES, "countries.csv")
    table = _codelist("pays", {"shared": "countries", "column": "nis"}, countries, "x.toml")
    assert table == {"150": "BEL", "111": "FRA"}
    with pytest.raises(ConfigurationError, match=r"needs mappings/codelists/countries\.csv"):
        _codelist("pays", {"shared": "countries", "column": "nis"}, None, "x.toml")
    with pytest.raises(ConfigurationError, match="a shared table is"):
        _codelist("pays", {"shared": "regions", "column": "nis"}, countries, "x.toml")
    with pytest.raises(ConfigurationError, match="no code column"):
        _codelist("pays", {"shared": "countries", "column": "iso2"}, countries, "x.toml")


def test_party_names_are_in_the_languages_of_the_single_window() -> None:
    parties = load_parties(HOME / "parties.toml")
    _check_languages(parties, MAPPINGS)
    portal = dataclasses.replace(parties["be-platform"], names={"es": "Portal"})
    broken = dataclasses.replace(parties, parties={**parties.parties, "be-platform": portal})
    with pytest.raises(ConfigurationError, match="be-platform has a name in 'es'"):
        _check_languages(broken, MAPPINGS)


def _forwarded_to_ibz(nationality: str) -> str:
    from gateway.mapping import GOLDEN_PARAMS
    from gateway.namespaces import CANONICAL_NS
    from gateway.xml import parse_xml

    mapping = MAPPINGS.get("be-fed-ibz", "from-canonical", "application.forwarded")
    source = parse_xml((mapping.path.parent / "application.forwarded.input.xml").read_bytes())
    found = source.find(f".//{{{CANONICAL_NS}}}worker/{{{CANONICAL_NS}}}nationality")
    assert found is not None
    found.text = nationality
    params = {**GOLDEN_PARAMS, "sender": "be-vlg-wse", "receiver": "be-fed-ibz"}
    out = mapping.apply(source, params)
    return str(out.xpath("string(//@nationalite)"))


def test_the_immigration_office_gets_nis_country_codes_and_never_an_unmapped_one() -> None:
    assert _forwarded_to_ibz("FRA") == "111"
    assert _forwarded_to_ibz("MAR") == "354"
    with pytest.raises(MappingError) as caught:
        _forwarded_to_ibz("ATG")  # Antigua and Barbuda: no NIS code in the list
    assert caught.value.code == "mapping.unmapped-code"
    assert "ATG" in caught.value.detail
