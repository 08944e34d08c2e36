"""The canonical corpus: one realistic message per type of the catalogue, and messages the
canonical schema must refuse.

Data-driven: every ``valid/<type>.xml`` must be schema-valid (libxml2, as on the hot path, and
xmlschema, as the mapping checker reads the schema) and pass the domain checks; every
``invalid/*.xml`` must be refused by both, and says at its top why (``invalid: …``) and which
element the refusal names (``rejected at: …``). Every type of the ``c:envelope/c:type``
enumeration has a valid instance here or among the golden canonical files of ``mappings/``.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from lxml import etree

from gateway.domain import check_canonical
from gateway.errors import SchemaValidationError
from gateway.namespaces import CANONICAL_NS
from gateway.schemas import Schema, SchemaCatalog
from gateway.xml import parse_xml

CORPUS = Path(__file__).resolve().parent
HOME = CORPUS.parents[2]
VALID = sorted((CORPUS / "valid").glob("*.xml"))
INVALID = sorted((CORPUS / "invalid").glob("*.xml"))
# Canonical messages of the golden pairs: what to-canonical mappings produce and what
# from-canonical mappings read.
GOLDEN = sorted(
    [
        *HOME.glob("mappings/*/to-canonical/*.expected.xml"),
        *HOME.glob("mappings/*/from-canonical/*.input.xml"),
    ]
)
MUNICIPALITIES = HOME / "mappings" / "codelists" / "municipalities.csv"

C = f"{{{CANONICAL_NS}}}"
NS = {"c": CANONICAL_NS}
_REJECTED_AT = re.compile(r"^\s*rejected at:\s*(\S+)\s*$", re.MULTILINE)


def _name(path: Path) -> str:
    return str(path.relative_to(HOME))


@pytest.fixture(scope="module")
def canonical() -> Schema:
    return SchemaCatalog.load(HOME / "schemas")["canonical"]


def _parse(path: Path) -> etree._Element:
    return parse_xml(path.read_bytes())


def _message_type(message: etree._Element) -> str:
    return message.findtext(f"{C}envelope/{C}type") or ""


def _payload_name(message_type: str) -> str:
    """``workAuthorisation.decided`` → ``workAuthorisationDecided``."""
    first, *rest = message_type.split(".")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _children(decl: Any) -> dict[str, Any]:
    return {e.local_name: e for e in decl.type.content.iter_elements()}


def _catalogue(schema: Schema) -> list[str]:
    """The enumeration of c:envelope/c:type, in the schema's order."""
    envelope = _children(schema.element(f"{C}message"))["envelope"]
    type_decl = _children(envelope)["type"]
    return [str(value) for value in type_decl.type.enumeration]


def _xmlschema_accepts(schema: Schema, message: etree._Element) -> bool:
    # An in-memory resource: the catalog's sandbox forbids reading files outside schemas/.
    return bool(schema.file_for(message).components.is_valid(xmlschema.XMLResource(message)))


def test_the_corpus_is_there() -> None:
    assert VALID, "no valid instances found"
    assert INVALID, "no invalid instances found"
    assert GOLDEN, "no golden canonical files found under mappings/"


@pytest.mark.parametrize("path", VALID, ids=_name)
def test_valid_instance(canonical: Schema, path: Path) -> None:
    message = _parse(path)
    canonical.validate(message)
    assert _xmlschema_accepts(canonical, message), "xmlschema refuses what libxml2 accepts"
    check_canonical(message)
    message_type = _message_type(message)
    assert path.name == f"{message_type}.xml", "a valid instance is named by its type"
    payload = message[1]
    assert etree.QName(payload).localname == _payload_name(message_type), (
        "the payload element does not match the envelope type"
    )


@pytest.mark.parametrize("path", INVALID, ids=_name)
def test_invalid_instance(canonical: Schema, path: Path) -> None:
    message = _parse(path)
    comment = message.getprevious()
    assert isinstance(comment, etree._Comment), "an invalid instance starts with a comment"
    text = comment.text or ""
    assert text.strip().startswith("invalid:"), "the comment says why the instance is invalid"
    rejected_at = _REJECTED_AT.search(text)
    assert rejected_at, "the comment names the element the refusal is about (rejected at: …)"
    with pytest.raises(SchemaValidationError) as refused:
        canonical.validate(message)
    assert rejected_at.group(1) in refused.value.detail, refused.value.detail
    assert not _xmlschema_accepts(canonical, message), "xmlschema accepts what libxml2 refuses"


def test_every_type_has_a_payload_element(canonical: Schema) -> None:
    payloads = set(_children(canonical.element(f"{C}message"))) - {"envelope"}
    expected = {_payload_name(t) for t in _catalogue(canonical)}
    assert payloads == expected


def test_every_type_has_a_valid_instance(canonical: Schema) -> None:
    covered: dict[str, list[str]] = {}
    for path in [*VALID, *GOLDEN]:
        message = _parse(path)
        canonical.validate(message)
        covered.setdefault(_message_type(message), []).append(_name(path))
    missing = [t for t in _catalogue(canonical) if t not in covered]
    assert not missing, f"message types without a valid canonical instance: {missing}"
    unknown = sorted(set(covered) - set(_catalogue(canonical)))
    assert not unknown, f"instances of types outside the catalogue: {unknown}"


def _municipalities() -> tuple[dict[str, set[str]], set[str]]:
    lines = [line for line in MUNICIPALITIES.read_text().splitlines() if not line.startswith("#")]
    names: dict[str, set[str]] = {}
    nis_codes: set[str] = set()
    for row in csv.DictReader(lines):
        spelled = (row[f"municipality_{language}"] for language in ("nl", "fr", "de"))
        names.setdefault(row["postcode"], set()).update(name for name in spelled if name)
        nis_codes.add(row["nis_code"])
    return names, nis_codes


@pytest.mark.parametrize("path", VALID, ids=_name)
def test_belgian_places_exist(path: Path) -> None:
    """Belgian addresses and NIS codes of the corpus are real municipalities."""
    names, nis_codes = _municipalities()
    message = _parse(path)
    for address in message.xpath("//*[c:country = 'BEL' and c:postcode]", namespaces=NS):
        postcode = address.findtext(f"{C}postcode") or ""
        spellings = names.get(postcode, set())
        assert spellings, f"{postcode} is not a Belgian postcode in use"
        assert address.findtext(f"{C}municipality") in spellings
    for code in message.xpath(
        "//c:notifyTo/c:municipality | //c:cardIssued/c:municipality", namespaces=NS
    ):
        assert code.text in nis_codes, f"{code.text} is not a NIS code of the table"
