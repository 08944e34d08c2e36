"""An independent validator agrees: every example a party sends, every message the hub delivers
to a party (the golden outputs of its from-canonical mappings) and every canonical example is
valid for ``xmllint --schema`` against the party's own XSD (JSON parties: their XML form; SOAP
parties: the payload of the envelope)."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from lxml import etree

from gateway.mapping import CANONICAL_SCHEMA, MappingSet
from gateway.xml import parse_xml, soap_payload

HOME = Path(__file__).resolve().parents[1]
MAPPINGS = MappingSet.load(HOME)
XMLLINT = shutil.which("xmllint")
pytestmark = pytest.mark.skipif(XMLLINT is None, reason="xmllint (libxml2-utils) not installed")


def _xml_form(party: str, path: Path) -> etree._Element:
    body = path.read_bytes()
    if party == CANONICAL_SCHEMA:
        return parse_xml(body)
    element = MAPPINGS.party(party).read(body)
    if element.tag.endswith("}Envelope"):
        element, _ = soap_payload(element)
    return element


def _documents() -> dict[str, list[Path]]:
    """Party (or the canonical schema) → the documents to check."""
    found: dict[str, list[Path]] = defaultdict(list)
    for party in MAPPINGS.parties:
        found[party] += sorted(
            p for p in (HOME / "examples" / party).glob("*.*") if ".invalid" not in p.name
        )
        found[party] += sorted((HOME / "mappings" / party / "from-canonical").glob("*.expected.*"))
    found[CANONICAL_SCHEMA] = sorted((HOME / "tests/corpus/canonical/valid").glob("*.xml"))
    return found


def _xmllint(tmp: Path, party: str, paths: list[Path]) -> dict[str, str]:
    """Run xmllint once per schema file; file name → its verdict line."""
    by_schema: dict[Path, list[Path]] = defaultdict(list)
    schema = MAPPINGS.catalog[party] if party == CANONICAL_SCHEMA else MAPPINGS.party(party).schema
    for index, path in enumerate(paths):
        element = _xml_form(party, path)
        out = tmp / f"{index:03d}-{path.name}.xml"
        out.write_bytes(etree.tostring(element, encoding="UTF-8", xml_declaration=True))
        by_schema[schema.file_for(element).path].append(out)
    verdicts: dict[str, str] = {}
    for xsd, files in by_schema.items():
        result = subprocess.run(
            [str(XMLLINT), "--noout", "--nonet", "--schema", str(xsd), *map(str, files)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        for line in result.stderr.splitlines():
            for file in files:
                if line.startswith(str(file)):
                    verdicts[file.name] = verdicts.get(file.name, "") + line + "\n"
    return verdicts


DOCUMENTS = _documents()


@pytest.mark.parametrize("party", sorted(DOCUMENTS))
def test_xmllint_validates_every_example_and_delivery(tmp_path: Path, party: str) -> None:
    paths = DOCUMENTS[party]
    assert paths, f"{party}: nothing to check"
    verdicts = _xmllint(tmp_path, party, paths)
    failed = {name: v for name, v in verdicts.items() if not v.rstrip().endswith("validates")}
    assert len(verdicts) == len(paths)
    assert failed == {}


def test_xmllint_refuses_what_the_hub_refuses(tmp_path: Path) -> None:
    broken = HOME / "examples/be-platform/application.submitted.invalid-schema.json"
    parsed = MAPPINGS.party("be-platform").read(broken.read_bytes())
    out = tmp_path / "broken.xml"
    out.write_bytes(etree.tostring(parsed))
    xsd = MAPPINGS.party("be-platform").schema.file_for(parsed).path
    result = subprocess.run(
        [str(XMLLINT), "--noout", "--nonet", "--schema", str(xsd), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "fails to validate" in result.stderr
