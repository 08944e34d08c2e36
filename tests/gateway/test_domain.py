"""Identifier checks, the competent region, and the procedure's own rules."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from gateway.codelists import Municipalities
from gateway.domain import (
    check_canonical,
    is_valid_enterprise_number,
    is_valid_establishment_unit,
    is_valid_insz,
    payload_element,
)
from gateway.errors import DomainCheckError, RoutingError
from gateway.namespaces import CANONICAL_NS

TABLE_PATH = Path(__file__).resolve().parents[2] / "mappings" / "codelists" / "municipalities.csv"
TABLE = Municipalities.parse(TABLE_PATH.read_text(), str(TABLE_PATH))


def _insz(born: str, serial: str, after_2000: bool = False) -> str:
    base = born + serial
    check = 97 - int(("2" if after_2000 else "") + base) % 97
    return f"{base}{check:02d}"


def test_national_numbers_of_both_centuries() -> None:
    assert is_valid_insz(_insz("850730", "033"))
    assert is_valid_insz(_insz("050101", "012", after_2000=True))
    assert not is_valid_insz(_insz("850730", "033")[:-1] + "0")


def test_bis_number_month_plus_40() -> None:
    assert is_valid_insz(_insz("854730", "033"))  # July + 40, sex known


@given(st.integers(min_value=0, max_value=99_999_999))
def test_enterprise_number_check_digits(body: int) -> None:
    first = f"0{body:08d}"[-9:]
    number = f"{first[:8]}{97 - int(first[:8]) % 97:02d}"
    assert is_valid_enterprise_number(number)
    wrong = f"{number[:8]}{(int(number[8:]) % 97) + 1:02d}"
    assert not is_valid_enterprise_number(wrong)


def test_establishment_unit_numbers_start_with_2_to_8() -> None:
    body = "21234567"
    good = body + f"{97 - int(body) % 97:02d}"
    assert is_valid_establishment_unit(good)
    assert not is_valid_establishment_unit("1" + good[1:])
    assert not is_valid_establishment_unit(good[:-1] + str((int(good[-1]) + 1) % 10))


@pytest.mark.parametrize(
    ("postcode", "region"),
    [
        ("1000", "brussels"),
        ("1210", "brussels"),
        ("1300", "wallonia"),
        ("1500", "flanders"),
        ("3990", "flanders"),
        ("4000", "wallonia"),
        ("4700", "german-speaking"),
        ("4780", "german-speaking"),
        ("4760", "german-speaking"),
        ("4800", "wallonia"),
        ("9000", "flanders"),
        ("8400", "flanders"),
        ("7000", "wallonia"),
    ],
)
def test_region_of_postcode(postcode: str, region: str) -> None:
    assert TABLE.region_of(postcode) == region


def test_the_table_covers_every_postcode_range_of_every_region() -> None:
    assert len(TABLE) > 1100
    spans = (
        (1000, 1299, "brussels"),
        (1300, 1499, "wallonia"),
        (1500, 3999, "flanders"),
        (4000, 7999, "wallonia"),
        (8000, 9999, "flanders"),
    )
    for first, last, region in spans:
        codes = [str(n) for n in range(first, last + 1) if TABLE.at(str(n))]
        assert codes, (first, last)
        others = {TABLE.region_of(c) for c in codes} - {region, "german-speaking"}
        assert not others, (first, last, others)


def test_the_nine_german_speaking_municipalities_are_all_there() -> None:
    names = {
        m.name_de
        for code in range(4700, 4800)
        for m in TABLE.at(str(code))
        if m.region == "german-speaking"
    }
    assert names == {
        "Eupen", "Kelmis", "Lontzen", "Raeren", "Amel", "Büllingen", "Burg-Reuland",
        "Bütgenbach", "Sankt Vith",
    }  # fmt: skip
    assert TABLE.region_of("4800") == "wallonia"  # Verviers, next door, is not


@pytest.mark.parametrize("postcode", ["0999", "12345", "B-9000", "", "1211"])
def test_not_a_belgian_postcode(postcode: str) -> None:
    with pytest.raises(RoutingError):
        TABLE.region_of(postcode)


def test_dates_are_compared_as_dates_not_text() -> None:
    from gateway.domain import _date_key

    assert _date_key("12030-02-01") > _date_key("2027-01-31")
    assert _date_key("2027-01-31") > _date_key("2027-01-30Z")
    assert _date_key("-0044-03-15") < _date_key("0001-01-01")


def test_a_birth_date_with_a_time_zone_still_matches_the_national_number() -> None:
    insz = _insz("940315", "027")
    for born in ("1994-03-15", "1994-03-15Z", "1994-03-15+01:00"):
        worker = etree.fromstring(
            f'<c:worker xmlns:c="urn:be:guichet:canonical:1"><c:birthDate>{born}</c:birthDate>'
            f"<c:insz>{insz}</c:insz></c:worker>"
        )
        check_canonical(worker)


CANONICAL_VALID = Path(__file__).resolve().parents[1] / "corpus" / "canonical" / "valid"


def _canonical(name: str) -> etree._Element:
    return etree.fromstring((CANONICAL_VALID / name).read_bytes())


def test_every_type_names_its_payload_element() -> None:
    assert payload_element("application.submitted") == "applicationSubmitted"
    assert payload_element("informationRequest.answered") == "informationRequestAnswered"
    assert payload_element("problem") == "problem"
    for path in CANONICAL_VALID.glob("*.xml"):
        check_canonical(_canonical(path.name))  # every valid example passes


def test_an_envelope_type_that_is_not_its_payload_is_refused() -> None:
    message = _canonical("workPermit.decided.xml")
    message.find(f"{{{CANONICAL_NS}}}envelope/{{{CANONICAL_NS}}}type").text = "appeal.decided"  # type: ignore[union-attr]
    with pytest.raises(DomainCheckError) as caught:
        check_canonical(message)
    assert caught.value.code == "message.invalid"
    assert caught.value.path == "/c:message/c:envelope/c:type"
    assert "workPermitDecided" in caught.value.detail


@pytest.mark.parametrize(("days", "ok"), [("90", True), ("91", False), (None, False)])
def test_a_short_stay_lasts_at_most_90_days(days: str | None, ok: bool) -> None:
    message = _canonical("workPermit.submitted.xml")
    permit = message.find(f"{{{CANONICAL_NS}}}workPermitSubmitted")
    assert permit is not None
    permit.find(f"{{{CANONICAL_NS}}}permitKind").text = "shortStay"  # type: ignore[union-attr]
    stay = permit.find(f"{{{CANONICAL_NS}}}stayDays")
    if days is None:
        if stay is not None:
            permit.remove(stay)
    else:
        assert stay is not None
        stay.text = days
    if ok:
        check_canonical(message)
    else:
        with pytest.raises(DomainCheckError, match="short") as caught:
            check_canonical(message)
        assert caught.value.code == "domain.invalid"


def test_a_country_code_outside_iso_3166_is_refused() -> None:
    from gateway.codelists import Countries
    from gateway.domain import check_countries

    table = TABLE_PATH.with_name("countries.csv")
    known = Countries.parse(table.read_text(), str(table)).iso_codes
    assert len(known) == 249  # every ISO 3166-1 country
    message = _canonical("workPermit.submitted.xml")
    check_countries(message, known)
    nationality = message.find(f".//{{{CANONICAL_NS}}}nationality")
    assert nationality is not None
    nationality.text = "XYZ"  # three capitals: the schema lets it through
    with pytest.raises(DomainCheckError, match="'XYZ' is not an ISO 3166-1") as caught:
        check_countries(message, known)
    assert caught.value.code == "domain.invalid"
    assert caught.value.path is not None and caught.value.path.endswith("nationality")
