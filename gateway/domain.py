"""Domain checks on canonical messages: the envelope's type names its payload, identifiers
(INSZ/BIS, KBO, establishment unit) and the birth date a national number encodes, dates in order,
and the procedure's own limits (a short stay is at most 90 days). The competent region is a code
list: gateway/codelists.py.

Pure functions over the canonical XML; no IO. See DOMAIN.md for the rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import date

from lxml import etree
from stdnum.be import bis, nn, vat

from gateway.errors import DomainCheckError
from gateway.namespaces import CANONICAL_NS

__all__ = [
    "check_canonical",
    "check_countries",
    "is_valid_establishment_unit",
    "is_valid_insz",
    "payload_element",
]

C = CANONICAL_NS
_NS = {"c": C}


def is_valid_insz(number: str) -> bool:
    """A national number or a BIS number with a correct check digit (both centuries)."""
    return bool(nn.is_valid(number) or bis.is_valid(number))


def is_valid_enterprise_number(number: str) -> bool:
    return len(number) == 10 and number[0] in "01" and bool(vat.is_valid(number))


def is_valid_establishment_unit(number: str) -> bool:
    """Establishment unit numbers: 10 digits starting 2–8, last two = 97 − (first 8 mod 97)."""
    return (
        len(number) == 10
        and number.isdigit()
        and number[0] in "2345678"
        and 97 - int(number[:8]) % 97 == int(number[8:])
    )


def _birth_date(number: str) -> date | None:
    module = nn if nn.is_valid(number) else bis
    try:
        born = module.get_birth_date(number)
    except (ValueError, nn.ValidationError):
        return None
    return born if isinstance(born, date) else None


def _elements(xpath: etree.XPath, message: etree._Element) -> list[etree._Element]:
    found = xpath(message)
    return [e for e in found if isinstance(e, etree._Element)] if isinstance(found, list) else []


def _path(element: etree._Element) -> str:
    return str(element.getroottree().getpath(element))


_INSZ = etree.XPath("//c:insz", namespaces=_NS)
_KBO = etree.XPath("//c:enterpriseNumber", namespaces=_NS)
_UNIT = etree.XPath("//c:establishmentUnit/c:number", namespaces=_NS)
# Numbers of the enterprise register (KBO/BCE): where, how checked, which problem.
_REGISTER_NUMBERS: tuple[tuple[etree.XPath, Callable[[str], bool], str, str], ...] = (
    (_KBO, is_valid_enterprise_number, "domain.kbo-check-digit", "enterprise number"),
    (_UNIT, is_valid_establishment_unit, "domain.unit-check-digit", "establishment unit number"),
)
_DATE_PAIRS = (
    ("contractStart", "contractEnd"),
    ("validFrom", "validUntil"),
)
_PAIR_XPATHS = tuple(
    (etree.XPath(f"//c:{first}", namespaces=_NS), f"{{{C}}}{second}", first, second)
    for first, second in _DATE_PAIRS
)


def payload_element(message_type: str) -> str:
    """The canonical payload element of a message type: ``workPermit.decided`` →
    ``workPermitDecided``."""
    resource, _, event = message_type.partition(".")
    return resource + event[:1].upper() + event[1:]


def _violations(message: etree._Element) -> Iterator[DomainCheckError]:
    message_type = message.findtext(f"{{{C}}}envelope/{{{C}}}type")
    payload = message[1] if len(message) > 1 else None
    if (
        message_type is not None
        and payload is not None
        and etree.QName(payload).localname != payload_element(message_type)
    ):
        yield DomainCheckError(
            f"the envelope says {message_type} but the payload is {etree.QName(payload).localname}",
            code="message.invalid",
            path="/c:message/c:envelope/c:type",
        )
    yield from _short_stay(message)
    for element in _elements(_INSZ, message):
        number = element.text or ""
        if not is_valid_insz(number):
            yield DomainCheckError(
                "national/BIS number fails its check digit or date",
                code="domain.insz-check-digit",
                path=_path(element),
            )
            continue
        born = element.getparent().findtext(f"{{{C}}}birthDate")  # type: ignore[union-attr]
        encoded = _birth_date(number)
        if born and encoded and (encoded.year, encoded.month, encoded.day) != _date_key(born):
            yield DomainCheckError(
                "national/BIS number does not encode the worker's birth date",
                code="domain.insz-birthdate",
                path=_path(element),
            )
    for xpath, is_valid, code, what in _REGISTER_NUMBERS:
        for element in _elements(xpath, message):
            if not is_valid(element.text or ""):
                yield DomainCheckError(
                    f"{what} {element.text} fails its check digits", code=code, path=_path(element)
                )
    for xpath, second_tag, first, second in _PAIR_XPATHS:
        for element in _elements(xpath, message):
            later = element.getparent().find(second_tag)  # type: ignore[union-attr]
            if later is not None and _date_key(later.text) < _date_key(element.text):
                yield DomainCheckError(
                    f"{second} {later.text} is before {first} {element.text}",
                    code="domain.date-order",
                    path=_path(later),
                )


SHORT_STAY_DAYS = 90
_PERMIT = f"{{{C}}}workPermitSubmitted"


def _short_stay(message: etree._Element) -> Iterator[DomainCheckError]:
    """A work permit for a short stay is for a stay of at most 90 days, and says how long."""
    permit = message.find(_PERMIT)
    if permit is None or permit.findtext(f"{{{C}}}permitKind") != "shortStay":
        return
    days = permit.find(f"{{{C}}}stayDays")
    if days is None:
        yield DomainCheckError(
            "a short-stay work permit needs the length of the stay (stayDays)",
            code="domain.invalid",
            path=_path(permit),
        )
    elif int((days.text or "0").strip()) > SHORT_STAY_DAYS:
        yield DomainCheckError(
            f"a short stay lasts at most {SHORT_STAY_DAYS} days, not {days.text}",
            code="domain.invalid",
            path=_path(days),
        )


_XSD_DATE = re.compile(r"^\s*(-?)(\d{4,})-(\d{2})-(\d{2})")


def _date_key(text: str | None) -> tuple[int, int, int]:
    """An xs:date (schema-valid already: years may have more than four digits, or a sign) as a
    comparable key; the time zone, at most a day apart, does not change an order of dates."""
    match = _XSD_DATE.match(text or "")
    if match is None:
        return (0, 0, 0)
    sign, year, month, day = match.groups()
    return (-int(year) if sign else int(year), int(month), int(day))


def check_canonical(message: etree._Element) -> None:
    """Raise the first domain violation of a canonical message (schema-valid already)."""
    for violation in _violations(message):
        raise violation


_COUNTRIES = etree.XPath("//c:nationality | //c:issuingCountry | //c:country", namespaces=_NS)


def check_countries(message: etree._Element, known: frozenset[str]) -> None:
    """Every country of a canonical message is an ISO 3166-1 alpha-3 code of the country list
    (the schema only checks three capital letters)."""
    for element in _elements(_COUNTRIES, message):
        code = (element.text or "").strip()
        if code not in known:
            raise DomainCheckError(
                f"{code!r} is not an ISO 3166-1 alpha-3 country code",
                code="domain.invalid",
                path=_path(element),
            )
