"""No personal data in any output of the hub: a whole demo, as a process, logging at debug.

``guichet demo --scenario all`` runs every case of the procedure (the hub, its sandbox back
offices, REST and SOAP) in one process with ``GUICHET_LOG_LEVEL=debug``: its structlog lines, the
standard library's (uvicorn, httpx, httpcore, zeep, warnings), anything printed, the operator's
timeline on stdout and any log file in its data dir are searched for the people of the messages
the demo sends. Those people are read from ``examples/`` through each party's mappings (the
canonical worker, contact and passport fields), so the list follows the examples.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from lxml import etree

from gateway.mapping import GOLDEN_PARAMS, MappingSet
from gateway.namespaces import CANONICAL_NS
from gateway.testing import guichet_command

HOME = Path(__file__).resolve().parents[1]
EXAMPLES = HOME / "examples"
_C = {"c": CANONICAL_NS}

# Where a person sits in a canonical message: the worker, and the employer's contact person.
PERSONAL_FIELDS = (
    "//c:worker/c:familyName",
    "//c:worker/c:givenNames",
    "//c:worker/c:birthDate",
    "//c:insz",
    "//c:passport/c:number",
    "//c:contact/c:name",
    "//c:contact/c:email",
    "//c:contact/c:phone",
)
# Files of the data dir that hold text output (the store and keys are not logs).
LOG_SUFFIXES = {".log", ".txt", ".jsonl", ".out", ".err"}


def _message_element(body: bytes) -> bytes:
    """A party's message as its format reads it: a SOAP envelope's body element, else itself."""
    root = etree.fromstring(body)
    if etree.QName(root).localname == "Envelope":
        body_element = next(c for c in root if etree.QName(c).localname == "Body")
        return etree.tostring(body_element[0])
    return body


def _canonical_examples(mappings: MappingSet) -> Iterable[etree._Element]:
    """Every example message (the invalid ones aside), translated to canonical."""
    for folder in sorted(p for p in EXAMPLES.iterdir() if p.is_dir()):
        party = mappings.party(folder.name)
        for path in sorted(folder.iterdir()):
            if ".invalid" in path.name or path.stem == "problem":
                continue
            raw = path.read_bytes()
            element = party.read(raw if path.suffix == ".json" else _message_element(raw))
            mapping = mappings.get(folder.name, "to-canonical", party.message_type(element))
            params = {**GOLDEN_PARAMS, "sender": folder.name, "receiver": ""}
            yield mapping.apply(element, params)


def _national_number_forms(number: str) -> list[str]:
    """A national or BIS number as people write it: 85073003328, 85.07.30-033.28, 850730-033-28."""
    yy, mm, dd, serial, check = number[:2], number[2:4], number[4:6], number[6:9], number[9:]
    return [number, f"{yy}.{mm}.{dd}-{serial}.{check}", f"{yy}{mm}{dd}-{serial}-{check}"]


def personal_data(mappings: MappingSet) -> set[str]:
    """What the demo's messages say of people: whole values, and each name of a person's names
    (of five letters or more, so that a name is not found inside ordinary words)."""
    found: set[str] = set()
    for canonical in _canonical_examples(mappings):
        for xpath in PERSONAL_FIELDS:
            nodes = canonical.xpath(xpath, namespaces=_C)
            assert isinstance(nodes, list)
            for node in nodes:
                assert isinstance(node, etree._Element)
                value = (node.text or "").strip()
                if not value:
                    continue
                found.add(value)
                if xpath.endswith("insz"):
                    found.update(_national_number_forms(value))
                if xpath.endswith(("Name", "Names", "name")):
                    found.update(part for part in value.split() if len(part) >= 5)
    return found


def _digits_joined(text: str) -> str:
    """Digits separated by ``.``, ``-``, ``/`` or spaces joined: 85.07.30-033.28 → 85073003328."""
    return re.sub(r"(?<=\d)[.\-/ ]+(?=\d)", "", text)


def leaks(text: str, secrets: Iterable[str]) -> list[str]:
    """The secrets found in ``text``: as they are, in any case, JSON-escaped (a JSON renderer
    writes ``Nguyễn`` as ``Nguy\\u1ec5n``) or, for numbers, with their separators dropped."""
    haystacks = [text.casefold(), _digits_joined(text).casefold()]
    found = []
    for secret in sorted(secrets):
        forms = {secret, json.dumps(secret)[1:-1], _digits_joined(secret)}
        if any(form.casefold() in haystack for form in forms for haystack in haystacks):
            found.append(secret)
    return found


@pytest.fixture(scope="module")
def secrets() -> set[str]:
    return personal_data(MappingSet.load(HOME))


def test_the_people_of_the_examples_are_found(secrets: set[str]) -> None:
    # The list is read from the examples: it must hold the worker of the first application.
    assert {"Raghunathan", "Arjun Vikram", "94431502752", "94.43.15-027.52", "Z4821637"} <= secrets
    assert "1994-03-15" in secrets and "Liesbeth Van Acker" in secrets


def test_the_detector_finds_what_it_must(secrets: set[str]) -> None:
    line = '{"event": "debug", "body": "insz 94.43.15-027.52 of RAGHUNATHAN"}'
    assert {"94.43.15-027.52", "94431502752", "Raghunathan"} <= set(leaks(line, secrets))
    assert leaks("the worker's insz: 94431502752", {"94431502752"}) == ["94431502752"]
    escaped = json.dumps({"name": "Nguyễn"})  # \u1ec5 in the text, as JSONRenderer writes it
    assert leaks(escaped, {"Nguyễn"}) == ["Nguyễn"]
    assert leaks("tel 3293456 at 2026-11-27T12:00:00Z, leaf #17", secrets) == []


def test_a_whole_demo_at_debug_prints_and_logs_no_personal_data(
    secrets: set[str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "demo"
    started = time.monotonic()
    result = guichet_command(
        "demo",
        "--scenario",
        "all",
        "--data-dir",
        str(data_dir),
        settings={"log_level": "debug"},
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "demo: OK" in result.stdout
    # The capture saw debug output of the hub and of the libraries, not a silent process.
    loggers = {json.loads(line).get("logger") for line in result.stderr.splitlines()}
    assert {"httpx", "httpcore.http11"} <= loggers, sorted(map(str, loggers))
    assert '"event": "message.accepted"' in result.stderr
    outputs = {"stdout (the timeline)": result.stdout, "stderr (the logs)": result.stderr}
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and path.suffix in LOG_SUFFIXES:
            outputs[str(path.relative_to(data_dir))] = path.read_text(errors="replace")
    found = {where: leaks(text, secrets) for where, text in outputs.items()}
    assert found == {where: [] for where in outputs}, f"personal data in {found}"
    assert elapsed < 240
