"""Every party's corpus of messages that must be refused (``tests/corpus/<party>/invalid/``).

Each file is a whole body as the party's back office would send it (REST JSON, REST XML, or a
SOAP 1.1 / 1.2 envelope); ``expected.toml`` beside it gives, per file, the problem ``code`` it
must get, optionally a substring of the problem's ``path``, and ``why`` it is wrong (and, for a
SOAP party, ``soap_action`` to send instead of the one the hub's WSDL gives the payload). Each is
posted to a running hub over mutual TLS as that party: refused with that problem and its HTTP
status, nothing sealed as accepted, and the hub still serving.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.errors import PROBLEMS
from gateway.namespaces import HUB_NS
from gateway.testing import RunningHub
from gateway.xml import parse_xml, soap_content_type, soap_payload

CORPUS = Path(__file__).parent / "corpus"


@dataclass(frozen=True)
class Case:
    party: str
    file: Path
    code: str
    path: str | None
    why: str
    soap_action: str | None


def _cases() -> list[Case]:
    cases = []
    for expected in sorted(CORPUS.glob("*/invalid/expected.toml")):
        party = expected.parent.parent.name
        table = tomllib.loads(expected.read_text())
        files = {p.name for p in expected.parent.iterdir() if p.name != "expected.toml"}
        assert files == set(table), f"{expected}: files and entries differ"
        for name, entry in sorted(table.items()):
            assert entry["code"] in PROBLEMS, f"{expected}: {name}: unknown code {entry['code']}"
            cases.append(
                Case(
                    party,
                    expected.parent / name,
                    entry["code"],
                    entry.get("path"),
                    entry["why"],
                    entry.get("soap_action"),
                )
            )
    return cases


CASES = _cases()


def test_every_party_has_a_corpus() -> None:
    from gateway.config import load_parties

    parties = load_parties(Path(__file__).parents[1] / "parties.toml")
    assert {case.party for case in CASES} == set(parties.parties)


def _post(hub: RunningHub, case: Case) -> tuple[int, str, str]:
    """Send the file as its party would; the problem's code and path as the hub answers."""
    party = hub.hub.parties[case.party]
    body = case.file.read_bytes()
    with hub.client(case.party) as client:
        if party.protocol == "rest":
            media = "application/json" if case.file.suffix == ".json" else "application/xml"
            response = client.post("/v1/messages", content=body, headers={"Content-Type": media})
            problem = response.json()
            return response.status_code, problem.get("code", ""), problem.get("path", "")
        version = "1.2" if party.protocol == "soap12" else "1.1"
        action = case.soap_action
        if action is None:
            endpoint = hub.hub.soap_endpoints[case.party]
            try:
                payload, _ = soap_payload(parse_xml(body), expect=version)
                action = endpoint.actions.get(payload.tag)
            except Exception:  # noqa: BLE001 - a broken envelope is the point of some cases
                action = None
        headers = {"Content-Type": soap_content_type(version, action)}
        if version == "1.1" and action is not None:
            headers["SOAPAction"] = f'"{action}"'
        response = client.post("/soap/v1", content=body, headers=headers)
    return response.status_code, *_fault_problem(response)


def _fault_problem(response: httpx.Response) -> tuple[str, str]:
    fault = parse_xml(response.content)
    ns = {"h": HUB_NS}
    return (
        str(fault.xpath("string(//h:problem/h:code)", namespaces=ns)),
        str(fault.xpath("string(//h:problem/h:path)", namespaces=ns)),
    )


def _accepted(hub: RunningHub) -> int:
    return sum(
        json.loads(leaf.record)["event"] == "exchange.accepted" for leaf in hub.hub.store.leaves()
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.party}/{c.file.name}")
def test_the_corpus_is_refused_with_the_expected_problem(quiet_hub: RunningHub, case: Case) -> None:
    before = _accepted(quiet_hub)
    status, code, path = _post(quiet_hub, case)
    assert code == case.code, f"{case.why}: got {code} at {path!r}"
    party = quiet_hub.hub.parties[case.party]
    if party.protocol == "rest":
        assert status == PROBLEMS[code].status
    elif party.protocol == "soap11":
        assert status == 500  # SOAP 1.1 carries every fault with HTTP 500
    else:
        assert status == (400 if PROBLEMS[code].soap_fault == "Client" else 500)
    if case.path is not None:
        assert case.path in path, f"{case.why}: the problem's path is {path!r}"
    assert _accepted(quiet_hub) == before
    with quiet_hub.client("operator") as client:
        assert client.get("/healthz").json() == {"status": "ok"}
