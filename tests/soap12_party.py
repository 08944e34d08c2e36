"""A SOAP 1.2 party for the tests, in a copy of the repository's data.

The repository's SOAP 1.2 party is be-dgo-min; the tests of the SOAP 1.2 binding use one of their
own, whose format is the Immigration Office's, so that the same payload can be compared over both
versions: ``soap12_home`` copies schemas/, mappings/, examples/ and parties.toml and adds one there,
``be-test-soap12``: the Immigration Office's format and mappings (a copy of be-fed-ibz) over SOAP
1.2, with the WSDLs of ``tests/fixtures/soap12``. It receives work-authorisation decisions (its
back office answers each with an ``Empfangsbestaetigung``) and sends residence decisions (which
its sandbox office does on receiving a work decision, over SOAP 1.2).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import HOME

PARTY = "be-test-soap12"
FIXTURES = HOME / "tests" / "fixtures" / "soap12"
IBZ = "urn:be:fgov:ibz:guichet:1"
ACK = "urn:guichet:test:soap12:1"
WSDL = "backoffice12.wsdl"
HUB_WSDL = "hub12.wsdl"
ACTION = f"{ACK}/ArbeitsentscheidungMitteilen"  # the back office's one operation
HUB_ACTION = f"{ACK}/AufenthaltsentscheidungUebermitteln"  # the hub's, as this party calls it

_PARTY_ENTRY = f"""
[parties.{PARTY}]
names = {{ en = "SOAP 1.2", nl = "SOAP 1.2", fr = "SOAP 1.2", de = "SOAP 1.2" }}
role = "federal"
protocol = "soap12"
endpoint = "https://127.0.0.1:9/"
wsdl = "{WSDL}"
hub_wsdl = "{HUB_WSDL}"
enterprise_number = "0207777760"
sends = ["residence.decided"]
receives = ["workAuthorisation.decided"]
"""

_OFFICE_ENTRY = f"""

[office.{PARTY}]
wsdl = "{WSDL}"
hub_wsdl = "{HUB_WSDL}"

[office.{PARTY}.acknowledgement]
NachrichtId = "$messageId"
EmpfangenAm = "$now"

[[office.{PARTY}.respond]]
on = "workAuthorisation.decided"
send = ["residence.decided"]
"""


def _edit(path: Path, before: str, after: str) -> None:
    text = path.read_text()
    assert text.count(before) == 1, f"{path} does not hold exactly one {before!r}"
    path.write_text(text.replace(before, after))


def soap12_home(directory: Path) -> Path:
    """A copy of the repository's data with the SOAP 1.2 party added; returns its home."""
    home = directory / "home"
    home.mkdir()
    for folder in ("schemas", "mappings", "examples"):
        shutil.copytree(HOME / folder, home / folder)
    shutil.copy2(HOME / "parties.toml", home / "parties.toml")
    # schemas/: the Immigration Office's XSD, and the fixture's WSDLs and acknowledgement.
    schemas = home / "schemas" / PARTY
    schemas.mkdir()
    shutil.copy2(HOME / "schemas" / "be-fed-ibz" / "ibz.xsd", schemas / "ibz.xsd")
    for name in (WSDL, HUB_WSDL, "acknowledgement.xsd"):
        shutil.copy2(FIXTURES / name, schemas / name)
    # mappings/: the Immigration Office's, under the new party's name and schema.
    shutil.copytree(HOME / "mappings" / "be-fed-ibz", home / "mappings" / PARTY)
    party_toml = home / "mappings" / PARTY / "party.toml"
    _edit(party_toml, 'party = "be-fed-ibz"', f'party = "{PARTY}"')
    _edit(party_toml, 'schema = "be-fed-ibz"', f'schema = "{PARTY}"')
    # examples/: its residence decision, as a SOAP 1.2 envelope.
    examples = home / "examples" / PARTY
    examples.mkdir()
    decision = (HOME / "examples" / "be-fed-ibz" / "residence.decided.xml").read_text()
    (examples / "residence.decided.xml").write_text(
        decision.replace(
            "http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope"
        ).replace("<ibz:Emetteur>be-fed-ibz<", f"<ibz:Emetteur>{PARTY}<")
    )
    # parties.toml: the party, and work decisions routed to it too.
    parties = home / "parties.toml"
    _edit(parties, "\n[cases.opened_by]", _PARTY_ENTRY + "\n[cases.opened_by]")
    _edit(
        parties,
        'type = "workAuthorisation.decided"\nto = ["be-platform", "be-fed-ibz"]',
        f'type = "workAuthorisation.decided"\nto = ["be-platform", "be-fed-ibz", "{PARTY}"]',
    )
    sandbox = home / "examples" / "sandbox.toml"
    sandbox.write_text(sandbox.read_text() + _OFFICE_ENTRY)
    return home
