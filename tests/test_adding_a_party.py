"""docs/adding-a-party.md, followed literally in a copy of the repository's data, and the
scaffold's other shapes (REST/XML, SOAP 1.1) and refusals."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from gateway.errors import ConfigurationError
from gateway.mapping import MappingSet
from gateway.scaffold import PartySpec, scaffold_party, soap12_supported
from gateway.testing import RunningHub, running_hub
from tests.conftest import HOME

DOC = (HOME / "docs" / "adding-a-party.md").read_text()
# The page's text with shell line continuations joined and runs of blanks collapsed.
FLAT_DOC = re.sub(r"[ \t]+", " ", re.sub(r"\\\n\s*", " ", DOC))

PARTY = "be-gem-gent"
SCAFFOLD = (
    f'guichet party new {PARTY} --protocol rest --format json --name "Stad Gent"'
    " --role municipality --sends status.updated --receives admissibility.decided --route"
)
CHECK = "guichet mappings check"
VALIDATE = f"guichet validate examples/{PARTY}/status.updated.json --party {PARTY}"
CERTS = "guichet certs init --dir var/gent/pki"
SCHEMA = f"schemas/{PARTY}/{PARTY}.xsd"
RULES = f"mappings/{PARTY}/from-canonical/admissibility.decided.toml"
CODES = f"mappings/{PARTY}/codelists.toml"
GOLDEN = f"mappings/{PARTY}/from-canonical/admissibility.decided.expected.json"

# (file, before, after) as the page shows them, code blocks as they are.
RESHAPE = [
    (
        SCHEMA,
        '      <xs:element name="decisionDate" type="xs:date"/>\n',
        '      <xs:element name="beslissingsdatum" type="xs:date"/>\n',
    ),
    (
        RULES,
        'to = "admissibilityDecided/decisionDate"\n',
        'to = "admissibilityDecided/beslissingsdatum"\n',
    ),
    (
        SCHEMA,
        '  <xs:simpleType name="AdmissibilityOutcome">\n'
        '    <xs:restriction base="xs:string">\n'
        '      <xs:enumeration value="admissible"/>\n'
        '      <xs:enumeration value="inadmissible"/>\n',
        '  <xs:simpleType name="AdmissibilityOutcome">\n'
        '    <xs:restriction base="xs:string">\n'
        '      <xs:enumeration value="ONTVANKELIJK"/>\n'
        '      <xs:enumeration value="ONONTVANKELIJK"/>\n',
    ),
    (
        CODES,
        "[admissibilityOutcome]  # admissibilityDecided/outcome\n"
        '"admissible" = "admissible"\n'
        '"inadmissible" = "inadmissible"\n',
        "[admissibilityOutcome]  # admissibilityDecided/outcome\n"
        '"ONTVANKELIJK" = "admissible"\n'
        '"ONONTVANKELIJK" = "inadmissible"\n',
    ),
]
# The golden pair's edits, which the page gives in its prose.
GOLDEN_EDITS = [
    ('"outcome": "admissible"', '"outcome": "ONTVANKELIJK"'),
    ('"decisionDate":', '"beslissingsdatum":'),
]


def copy_home(tmp_path: Path, without: tuple[str, ...] = ()) -> Path:
    """What the hub is made of, copied: schemas, mappings, examples, parties.toml; the parties
    of ``without`` left out (their folders and their tables), to scaffold them anew."""
    home = tmp_path / "home"
    home.mkdir()
    for folder in ("schemas", "mappings", "examples"):
        shutil.copytree(HOME / folder, home / folder)
        for party in without:
            shutil.rmtree(home / folder / party, ignore_errors=True)
    shutil.copy2(HOME / "parties.toml", home / "parties.toml")
    for relative, table in (("parties.toml", "parties"), ("examples/sandbox.toml", "office")):
        for party in without:
            _drop_tables(home / relative, f"{table}.{party}")
    return home


def _drop_tables(path: Path, name: str) -> None:
    """Remove the TOML table ``name`` and its sub-tables (and arrays of tables) from a file."""
    kept: list[str] = []
    dropping = False
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("["):
            header = line.strip().strip("[]")
            dropping = header == name or header.startswith(name + ".")
        if not dropping:
            kept.append(line)
    path.write_text("".join(kept))


def guichet(home: Path, command: str) -> subprocess.CompletedProcess[str]:
    """A command of the page, run in ``home`` as an integrator runs it from the checkout."""
    args = shlex.split(command)
    assert args[0] == "guichet"
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args[1:]],
        cwd=home,
        env={**os.environ, "GUICHET_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def edit(home: Path, relative: str, before: str, after: str) -> None:
    path = home / relative
    text = path.read_text()
    assert text.count(before) == 1, f"{relative} does not hold exactly one {before!r}"
    path.write_text(text.replace(before, after))


def file_application(running: RunningHub, home: Path) -> None:
    body = (home / "examples" / "be-platform" / "application.submitted.json").read_bytes()
    with running.client("be-platform") as client:
        answer = client.post(
            "/v1/messages", content=body, headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 202, answer.text


def test_the_page_shows_what_this_test_runs() -> None:
    for command in (SCAFFOLD, CHECK, VALIDATE, CERTS):
        assert f".venv/bin/{command}" in FLAT_DOC, command
    for relative, before, after in RESHAPE:
        assert relative in DOC
        assert f"\n{before}```" in DOC and f"\n{after}```" in DOC, before
    for before, after in GOLDEN_EDITS:
        assert f"`{before}`" in DOC and f"`{after}`" in DOC


@pytest.mark.slow
def test_adding_a_party_as_the_page_says(tmp_path: Path) -> None:
    home = copy_home(tmp_path)
    parties_before = (home / "parties.toml").read_text()

    # 1. Scaffold.
    made = guichet(home, SCAFFOLD)
    assert made.returncode == 0, made.stderr
    assert f"[parties.{PARTY}]" in (home / "parties.toml").read_text()
    route = next(r for r in load_routes(home) if r["type"] == "admissibility.decided")
    assert route["to"] == ["be-platform", PARTY]
    # Appended, never rewritten: every line of the file is still there but the edited route.
    lines_before = parties_before.splitlines()
    lines_after = (home / "parties.toml").read_text().splitlines()
    changed = [n for n, line in enumerate(lines_before) if lines_after[n] != line]
    assert [lines_before[n] for n in changed] == ['to = ["be-platform"]']

    # 2. It works as it is.
    assert guichet(home, CHECK).returncode == 0

    # 3. Reshape, as the page shows.
    for relative, before, after in RESHAPE:
        edit(home, relative, before, after)
    halfway = guichet(home, CHECK)
    assert halfway.returncode == 1  # the golden pair still has the old name and code
    assert "admissibility.decided.toml: output differs" in halfway.stderr
    for before, after in GOLDEN_EDITS:
        edit(home, GOLDEN, before, after)

    # 4. Check.
    checked = guichet(home, CHECK)
    assert checked.returncode == 0, checked.stderr
    assert f"ok   {PARTY} from-canonical admissibility.decided" in checked.stdout
    assert f"ok   {PARTY} to-canonical status.updated" in checked.stdout
    valid = guichet(home, VALIDATE)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert valid.stdout.startswith(f"valid: status.updated, which the hub accepts from {PARTY}")

    # 5. Certificates.
    certs = guichet(home, CERTS)
    assert certs.returncode == 0, certs.stderr
    assert (home / "var" / "gent" / "pki" / f"{PARTY}.pem").is_file()

    # 6. Run it: the portal files, Flanders decides admissibility, Ghent receives it.
    with running_hub(home / "var" / "gent", home=home, delivery_backoff_s=0.05) as running:
        file_application(running, home)
        received = running.sandbox.offices[PARTY].wait_for(
            lambda r: r.message_type == "admissibility.decided", timeout=20
        )
        body = json.loads(received.body)
        assert body["admissibilityDecided"]["outcome"] == "ONTVANKELIJK"
        assert "beslissingsdatum" in body["admissibilityDecided"]
        assert "decisionDate" not in body["admissibilityDecided"]
        ghent = MappingSet.load(home).party(PARTY)  # the reshaped schema, read afresh
        ghent.schema.validate(ghent.read(received.body))
        assert running.sandbox.offices[PARTY].rejected == []
        with running.client(PARTY) as client:
            state = wait_delivered(client, received.message_id, PARTY)
        assert state["type"] == "admissibility.decided"


def load_routes(home: Path) -> list[dict[str, object]]:
    routes: list[dict[str, object]] = tomllib.loads((home / "parties.toml").read_text())["routes"]
    return routes


def wait_delivered(client: object, message_id: str, receiver: str) -> dict[str, object]:
    """GET /v1/messages/{id} until the receiver's delivery is sealed (bounded)."""
    import httpx

    assert isinstance(client, httpx.Client)
    deadline = time.monotonic() + 20
    while True:
        answer = client.get(f"/v1/messages/{message_id}")
        assert answer.status_code == 200, answer.text
        state: dict[str, object] = answer.json()
        deliveries = state["deliveries"]
        assert isinstance(deliveries, list)
        if any(d["receiver"] == receiver and d["state"] == "delivered" for d in deliveries):
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.05)


@pytest.mark.slow
def test_rest_xml_and_soap_parties_work_as_scaffolded(tmp_path: Path) -> None:
    home = copy_home(tmp_path, without=("be-bru-bee",))  # scaffolded afresh below
    for command in (
        "guichet party new be-bru-bee --protocol rest --format xml --region brussels"
        " --sends admissibility.decided workAuthorisation.decided status.updated"
        " --receives application.submitted residence.decided status.updated problem --route",
        "guichet party new be-fed-xyz --protocol soap11 --format xml"
        " --sends status.updated --receives admissibility.decided problem --route",
    ):
        made = guichet(home, command)
        assert made.returncode == 0, made.stderr
    checked = guichet(home, CHECK)
    assert checked.returncode == 0, checked.stderr
    for party, message_type in (
        ("be-bru-bee", "workAuthorisation.decided"),
        ("be-bru-bee", "status.updated"),
        ("be-fed-xyz", "status.updated"),
    ):
        valid = guichet(
            home, f"guichet validate examples/{party}/{message_type}.xml --party {party}"
        )
        assert valid.returncode == 0, valid.stdout
    for wsdl in ("be-fed-xyz-backoffice.wsdl", "be-fed-xyz-hub.wsdl"):
        assert (home / "schemas" / "be-fed-xyz" / wsdl).is_file()
    # A region is reached by @competent-region: its routes are left as they were.
    routes = load_routes(home)
    assert next(r for r in routes if r["type"] == "application.submitted")["to"] == [
        "@competent-region"
    ]
    # The SOAP party answers what it receives (the commented lines of sandbox.toml, uncommented).
    sandbox = home / "examples" / "sandbox.toml"
    sandbox.write_text(
        sandbox.read_text().replace(
            '# [[office.be-fed-xyz.respond]]\n# on = "admissibility.decided"\n'
            '# send = ["status.updated"]',
            '[[office.be-fed-xyz.respond]]\non = "admissibility.decided"\n'
            'send = ["status.updated"]',
        )
    )
    with running_hub(tmp_path / "data", home=home, delivery_backoff_s=0.05) as running:
        file_application(running, home)
        office = running.sandbox.offices["be-fed-xyz"]
        received = office.wait_for(lambda r: r.message_type == "admissibility.decided", timeout=20)
        assert b"admissibilityDecidedMessage" in received.body
        sent = office.wait_for_sent(timeout=20)
        assert (sent.message_type, sent.status, sent.error) == ("status.updated", 200, None)
        assert b"<h:status>accepted</h:status>" in sent.response
        assert running.sandbox.offices["be-bru-bee"].received == []  # Ghent is in Flanders
        assert office.rejected == []


@pytest.mark.slow
@pytest.mark.skipif(not soap12_supported(), reason="the hub does not speak SOAP 1.2")
def test_a_soap12_region_works_as_scaffolded(tmp_path: Path) -> None:
    home = copy_home(tmp_path, without=("be-dgo-min",))  # scaffolded afresh below
    made = guichet(
        home,
        "guichet party new be-dgo-min --protocol soap12 --format xml --region german-speaking"
        " --sends admissibility.decided --receives application.submitted problem --route",
    )
    assert made.returncode == 0, made.stderr
    assert "@competent-region reaches be-dgo-min" in made.stdout
    sandbox = home / "examples" / "sandbox.toml"
    sandbox.write_text(
        sandbox.read_text().replace(
            '# [[office.be-dgo-min.respond]]\n# on = "application.submitted"\n'
            '# send = ["admissibility.decided"]',
            '[[office.be-dgo-min.respond]]\non = "application.submitted"\n'
            'send = ["admissibility.decided"]',
        )
    )
    # The workplace in Eupen: the German-speaking Community is competent.
    application = (home / "examples" / "be-platform" / "application.submitted.json").read_text()
    eupen = application.replace('"postalCode": "9000"', '"postalCode": "4700"', 1).encode()
    with running_hub(tmp_path / "data", home=home, delivery_backoff_s=0.05) as running:
        with running.client("be-platform") as client:
            answer = client.post(
                "/v1/messages", content=eupen, headers={"Content-Type": "application/json"}
            )
        assert answer.status_code == 202, answer.text
        assert answer.json()["receivers"] == ["be-dgo-min"]
        office = running.sandbox.offices["be-dgo-min"]
        received = office.wait_for(timeout=20)
        assert b"http://www.w3.org/2003/05/soap-envelope" in received.body
        sent = office.wait_for_sent(timeout=20)
        assert (sent.message_type, sent.status, sent.error) == ("admissibility.decided", 200, None)
        assert office.rejected == []


def scaffold(home: Path, party_id: str = "be-fed-new", **fields: object) -> None:
    spec = {"protocol": "rest", "format": "json", "receives": ("admissibility.decided",)}
    spec.update(fields)
    scaffold_party(home, PartySpec(party_id=party_id, **spec))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("party_id", "fields", "says"),
    [
        ("be-vlg-wse", {}, "exists already"),
        ("BE-new", {}, "is not a party id"),
        ("be", {}, "is not a party id"),
        ("be-fed-new", {"receives": ("residence.granted",)}, "not in the message catalogue"),
        ("be-fed-new", {"protocol": "soap11"}, "SOAP bodies are XML"),
        ("be-fed-new", {"receives": ()}, "give --sends or --receives"),
        (
            "be-fed-new",
            {"protocol": "soap11", "format": "xml", "receives": (), "sends": ("status.updated",)},
            "give --receives",
        ),
        ("be-fed-new", {"enterprise_number": "0316380941"}, "not a KBO/BCE enterprise number"),
        ("be-fed-new", {"region": "flanders"}, "be-vlg-wse already is the party of region"),
    ],
)
def test_refusals_write_nothing(
    tmp_path: Path, party_id: str, fields: dict[str, object], says: str
) -> None:
    home = copy_home(tmp_path)
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    with pytest.raises(ConfigurationError, match=re.escape(says)):
        scaffold(home, party_id, **fields)
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == before


def test_soap12_works_once_the_hub_speaks_it(tmp_path: Path) -> None:
    home = copy_home(tmp_path)
    if soap12_supported():
        scaffold(home, protocol="soap12", format="xml", sends=("status.updated",))
        assert guichet(home, CHECK).returncode == 0
        wsdl = (home / "schemas" / "be-fed-new" / "be-fed-new-backoffice.wsdl").read_text()
        assert 'xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap12/"' in wsdl
        example = (home / "examples" / "be-fed-new" / "status.updated.xml").read_text()
        assert 'xmlns:soap="http://www.w3.org/2003/05/soap-envelope"' in example
        # What the page says: `guichet validate` reads SOAP 1.2 envelopes like SOAP 1.1 ones.
        payload = "examples/be-fed-new/status.updated.xml"
        assert "reads SOAP 1.1 and SOAP 1.2 envelopes alike" in DOC
        valid = guichet(home, f"guichet validate {payload} --party be-fed-new")
        assert valid.returncode == 0, valid.stdout
    else:
        with pytest.raises(ConfigurationError, match=r"does not speak SOAP 1\.2 yet"):
            scaffold(home, protocol="soap12", format="xml")


def test_without_route_the_files_are_only_appended_to(tmp_path: Path) -> None:
    home = copy_home(tmp_path)
    parties = (home / "parties.toml").read_text()
    sandbox = (home / "examples" / "sandbox.toml").read_text()
    scaffold(home, name="Nouveau", enterprise_number="BE 0403.695.390")
    assert (home / "parties.toml").read_text().startswith(parties)
    assert (home / "examples" / "sandbox.toml").read_text().startswith(sandbox)
    entry = tomllib.loads((home / "parties.toml").read_text())["parties"]["be-fed-new"]
    assert entry["names"] == {"nl": "Nouveau", "fr": "Nouveau", "de": "Nouveau", "en": "Nouveau"}
    assert entry["role"] == "federal"
    assert entry["receives"] == ["admissibility.decided"]
    assert entry["enterprise_number"] == "0403695390"
    assert entry["endpoint"].startswith("https://127.0.0.1:")
    assert guichet(home, CHECK).returncode == 0
