"""A whole case across real back offices: REST and SOAP, into and out of the hub, over mTLS.

The sandbox back offices are real HTTPS servers with the parties' certificates; they validate
what the hub delivers against their own schemas and answer with the next message of the
procedure, sent to the hub over REST (Flanders, the portal) and SOAP 1.1 (Immigration Office).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from gateway.audit import verify_log
from gateway.certs import DevPki
from gateway.demo import CASE_TYPES
from gateway.testing import RunningHub, running_hub, wait_until
from gateway.xml import SOAP11_NS, parse_xml
from tests.conftest import EXAMPLES, HOME, guichet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> Iterator[RunningHub]:
    with running_hub(tmp_path_factory.mktemp("live"), pki=pki, delivery_backoff_s=0.05) as running:
        yield running


def _file_case(live: RunningHub) -> tuple[str, str]:
    body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
    message_id = str(uuid.uuid4())
    subject = f"SP-TEST-{uuid.uuid4().hex[:8]}"
    body["header"].update(messageId=message_id, caseReference=subject)
    with live.client("be-platform") as client:
        response = client.post("/v1/messages", json=body)
    assert response.status_code == 202, response.text
    return message_id, subject


def test_a_whole_case_is_validated_sealed_and_delivered(live: RunningHub) -> None:
    message_id, subject = _file_case(live)
    store = live.hub.store

    def done() -> bool:
        rows = store.messages_for_subject(subject)
        return sorted(r.type for r in rows) == sorted(CASE_TYPES) and all(
            d.state == "delivered" for r in rows for d in store.deliveries(r.id)
        )

    assert wait_until(done), [
        (r.type, [d.state for d in store.deliveries(r.id)])
        for r in store.messages_for_subject(subject)
    ]
    offices = live.sandbox.offices
    # REST in and out: Flanders got the application in its own Dutch JSON, and answered.
    flanders = offices["be-vlg-wse"].wait_for(lambda r: r.message_id == message_id)
    assert flanders.message_type == "application.submitted"
    assert json.loads(flanders.body)["kop"]["dossiernummer"] == subject
    # SOAP out: the Immigration Office got both decisions as SOAP 1.1 payloads it validated.
    ibz = offices["be-fed-ibz"]
    ibz_types = {r.message_type for r in ibz.received if r.subject == subject}
    assert {"admissibility.decided", "workAuthorisation.decided", "status.updated"} <= ibz_types
    # SOAP in: its residence decision reached the portal and Flanders, translated.
    residence = [r for r in store.messages_for_subject(subject) if r.type == "residence.decided"]
    assert residence and residence[0].sender == "be-fed-ibz"
    portal = offices["be-platform"].wait_for(
        lambda r: r.message_type == "residence.decided" and r.subject == subject
    )
    assert (
        json.loads(portal.body)["residenceDecision"]["annexNumber"] == 46
    )  # an integer in the portal's JSON
    assert not any(o.rejected for o in offices.values())
    assert sum(o.duplicates for o in offices.values()) == 0
    # Every delivery was sealed; the whole log verifies.
    case_ids = {r.id for r in store.messages_for_subject(subject)}
    delivered = [
        record
        for record in (json.loads(leaf.record) for leaf in store.leaves())
        if record["event"] == "delivery.delivered" and record["messageId"] in case_ids
    ]
    # Receivers over the seven messages of the case, each exactly once: the application 1,
    # admissibility 2, forwarding 1, work decision 2, residence decision 2, card 2, status 2.
    assert len(delivered) == 12
    assert len({(r["messageId"], r["receiver"]) for r in delivered}) == 12
    live.hub.checkpoint()
    report = verify_log(store.leaves(), store.checkpoints(), live.hub.signer.certificate)
    assert report.ok, report.problems


def test_soap_sender_gets_a_signed_receipt_and_the_wsdl(live: RunningHub) -> None:
    filed, subject = _file_case(live)
    assert wait_until(lambda: live.hub.store.case(subject) is not None)
    envelope = parse_xml((EXAMPLES / "be-fed-ibz" / "residence.decided.xml").read_bytes())
    ns = {"ibz": "urn:be:fgov:ibz:guichet:1"}
    envelope.xpath("//ibz:Entete/ibz:EnReponseA", namespaces=ns)[0].text = filed  # type: ignore[index,union-attr]
    envelope.xpath("//ibz:Entete/ibz:IdMessage", namespaces=ns)[0].text = str(uuid.uuid4())  # type: ignore[index,union-attr]
    envelope.xpath("//ibz:Entete/ibz:Dossier", namespaces=ns)[0].text = subject  # type: ignore[index,union-attr]
    with live.client("be-fed-ibz") as client:
        response = client.post(
            "/soap/v1",
            content=etree.tostring(envelope),
            headers={
                "Content-Type": "text/xml; charset=utf-8",
                "SOAPAction": '"urn:be:fgov:ibz:guichet:1/TransmettreDecisionSejour"',
            },
        )
        wsdl = client.get("/soap/v1", params={"wsdl": ""})
    assert response.status_code == 200, response.text
    receipt = parse_xml(response.content)
    hub = {"h": "urn:be:guichet:hub:1", "s": SOAP11_NS}
    assert receipt.xpath("string(//h:receipt/h:status)", namespaces=hub) == "accepted"
    receivers = receipt.xpath("//h:receipt/h:receivers/h:receiver/text()", namespaces=hub)
    assert sorted(receivers) == ["be-platform", "be-vlg-wse"]  # type: ignore[arg-type]
    assert wsdl.status_code == 200
    assert f'location="{live.url}/soap/v1"' in wsdl.text


def test_soap_sender_gets_a_fault_with_the_place_of_the_error(live: RunningHub) -> None:
    envelope = (EXAMPLES / "be-fed-ibz" / "residence.decided.xml").read_bytes()
    broken = envelope.replace(b"<ibz:Dossier>", b"<ibz:Dossier>not a valid case id ", 1)
    with live.client("be-fed-ibz") as client:
        response = client.post(
            "/soap/v1", content=broken, headers={"Content-Type": "text/xml; charset=utf-8"}
        )
        malformed = client.post(
            "/soap/v1", content=b"<soap:Envelope", headers={"Content-Type": "text/xml"}
        )
    assert response.status_code == 500
    fault = parse_xml(response.content)
    ns = {"s": SOAP11_NS, "h": "urn:be:guichet:hub:1"}
    assert fault.xpath("string(//faultcode)", namespaces=ns) == "soap:Client"
    assert fault.xpath("string(//h:problem/h:code)", namespaces=ns) == "schema.invalid"
    assert "Dossier" in str(fault.xpath("string(//h:problem/h:path)", namespaces=ns))
    assert fault.xpath("string(//h:problem/h:schemaId)", namespaces=ns) == "be-fed-ibz"
    assert fault.xpath("string(//h:problem/h:line)", namespaces=ns)
    assert malformed.status_code == 500
    assert b"xml.malformed" in malformed.content


def _quiet(live: RunningHub) -> bool:
    """No delivery in flight and no reply chain still producing messages."""

    def settled() -> bool:
        size = len(live.hub.store.leaves())
        time.sleep(0.3)
        return live.hub.store.outbox_depth() == 0 and len(live.hub.store.leaves()) == size

    return wait_until(settled)


def test_a_receiver_down_then_up_gets_its_message(live: RunningHub) -> None:
    assert _quiet(live)
    office = live.sandbox.offices["be-vlg-wse"]
    office.fail_next(2, 503)
    message_id, _ = _file_case(live)
    received = office.wait_for(lambda r: r.message_id == message_id, timeout=20)
    assert received.message_type == "application.submitted"
    assert wait_until(lambda: live.hub.store.deliveries(message_id)[0].state == "delivered")
    assert live.hub.store.deliveries(message_id)[0].attempts == 3
    events = [json.loads(leaf.record) for leaf in live.hub.store.leaves()]
    failures = [
        e for e in events if e["event"] == "delivery.failed" and e["messageId"] == message_id
    ]
    assert [f["status"] for f in failures] == [503, 503]


def test_the_demo_command_exits_0_and_shows_the_case(tmp_path: Path) -> None:
    result = guichet("demo", "--data-dir", tmp_path / "demo")
    assert result.returncode == 0, result.stdout + result.stderr
    for message_type in CASE_TYPES:
        assert message_type in result.stdout
    assert "SOAP 1.1" in result.stdout
    assert "verified" in result.stdout
    assert result.stdout.rstrip().endswith("demo: OK")
    verify = guichet("audit", "verify", "--data-dir", tmp_path / "demo")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_the_demo_of_every_scenario_shows_all_six_parties(tmp_path: Path) -> None:
    from gateway.config import load_parties
    from gateway.demo import SCENARIOS

    result = guichet("demo", "--scenario", "all", "--data-dir", tmp_path / "all")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert result.stdout.rstrip().endswith("demo: OK")
    for name in SCENARIOS:
        assert f"== {name}:" in result.stdout
    involved = result.stdout.split("parties involved: ", 1)[1].split("\n", 1)[0]
    assert set(involved.split(", ")) == set(load_parties(HOME / "parties.toml").parties)
    for wire in ("SOAP 1.1", "SOAP 1.2", "application/xml", "application/json"):
        assert wire in result.stdout, wire
    # The auditor's side of the same data: the store verifies, a bundle of it exports and
    # verifies offline, and every message replays with its pinned versions without a mismatch.
    data = str(tmp_path / "all")
    bundle = str(tmp_path / "all.zip")
    for command in (
        ["audit", "verify", "--data-dir", data],
        ["audit", "export", "--checkpoint", "--out", bundle, "--data-dir", data],
        ["audit", "verify", bundle],
        ["audit", "replay", "--data-dir", data],
    ):
        done = guichet(*command)
        assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
    assert " 0 mismatch, 0 not replayable" in done.stdout


def test_the_demo_refuses_an_unknown_scenario() -> None:
    result = guichet("demo", "--scenario", "first-mars")
    assert result.returncode == 2
    assert "invalid choice: 'first-mars'" in result.stderr


def _soap(live: RunningHub, payload: bytes) -> bytes:
    envelope = (
        f'<soap:Envelope xmlns:soap="{SOAP11_NS}"><soap:Body>'.encode()
        + payload
        + b"</soap:Body></soap:Envelope>"
    )
    with live.client("be-fed-ibz") as client:
        response = client.post(
            "/soap/v1", content=envelope, headers={"Content-Type": "text/xml; charset=utf-8"}
        )
    assert response.status_code == 500
    fault = parse_xml(response.content)
    return str(
        fault.xpath("string(//h:problem/h:code)", namespaces={"h": "urn:be:guichet:hub:1"})
    ).encode()


def test_soap_payload_in_a_foreign_namespace_is_refused(live: RunningHub) -> None:
    assert _soap(live, b'<x:DecisionSejour xmlns:x="urn:example:other"/>') == (
        b"schema.wrong-namespace"
    )


def test_soap_payload_that_is_no_message_type_is_refused(live: RunningHub) -> None:
    # Valid against the Immigration Office's schema, but an acknowledgement, not a message.
    ack = (
        b'<ibz:AccuseReception xmlns:ibz="urn:be:fgov:ibz:guichet:1">'
        b"<ibz:IdMessage>3f6c2a1e-8b4d-4c7a-9e21-5d0b7f3a9c14</ibz:IdMessage>"
        b"<ibz:DateReception>2026-11-27T10:00:00Z</ibz:DateReception></ibz:AccuseReception>"
    )
    assert _soap(live, ack) == b"message.unknown-type"


def test_soap_message_of_a_type_the_party_may_not_send(live: RunningHub) -> None:
    golden = HOME / "mappings/be-fed-ibz/from-canonical/admissibility.decided.expected.xml"
    assert _soap(live, golden.read_bytes().split(b"?>", 1)[-1]) == b"authz.type-not-allowed"


def test_soap_action_must_match_the_payload(live: RunningHub) -> None:
    envelope = (EXAMPLES / "be-fed-ibz" / "residence.decided.xml").read_bytes()
    with live.client("be-fed-ibz") as client:
        response = client.post(
            "/soap/v1",
            content=envelope,
            headers={
                "Content-Type": "text/xml; charset=utf-8",
                "SOAPAction": '"urn:be:fgov:ibz:guichet:1/TransmettreStatut"',
            },
        )
    assert response.status_code == 500
    assert b"soap.action-mismatch" in response.content


def test_evidence_names_exactly_the_configuration_files_in_force(live: RunningHub) -> None:
    """Every digest an exchange record names is a file sealed by configuration.loaded, whose
    bytes are kept and hash to it: a replay can rebuild the exact mappings and schemas."""
    store = live.hub.store
    records = [json.loads(leaf.record) for leaf in store.leaves()]
    loaded = next(r for r in records if r["event"] == "configuration.loaded")["files"]
    assert "mappings/be-platform/to-canonical/_envelope.toml" in loaded  # includes too
    for path, sha in loaded.items():
        kept = store.artefact(sha)  # the kept bytes hash to the recorded digest
        assert kept is not None, path
        assert hashlib.sha256(kept).hexdigest() == sha, path
    digests = set(loaded.values())
    accepted = [r for r in records if r["event"] == "exchange.accepted"]
    assert accepted
    for record in accepted:
        refs = [record["inbound"]["schema"], record["canonical"]["schema"]]
        refs += [o["schema"] for o in record["outbound"]]
        files = record["canonical"]["mapping"] + [
            f for o in record["outbound"] for f in o["mapping"]
        ]
        assert all(ref["sha256"] in digests for ref in refs)
        assert all(loaded[f["file"]] == f["sha256"] for f in files)


def test_the_wsdl_serves_its_own_schemas_and_nothing_else(live: RunningHub) -> None:
    with live.client("be-fed-ibz") as client:
        wsdl = client.get("/soap/v1", params={"wsdl": ""}).text
        assert f'schemaLocation="{live.url}/soap/v1?xsd=../hub/hub.xsd"' in wsdl
        assert client.get("/soap/v1", params={"xsd": "ibz.xsd"}).status_code == 200
        assert client.get("/soap/v1", params={"xsd": "../hub/hub.xsd"}).status_code == 200
        for name in (
            "../be-platform/portal.xsd",
            "../canonical/canonical.xsd",
            "../../parties.toml",
            "/etc/passwd",
            "ibz.xsd\x00",
            "a" * 300 + ".xsd",
        ):
            response = client.get("/soap/v1", params={"xsd": name})
            assert response.status_code == 500, name  # a SOAP Fault: 500 with a Client code
            assert b"message.not-found" in response.content, name
    with live.client("be-platform") as client:  # a REST party has no WSDL
        assert client.get("/soap/v1", params={"wsdl": ""}).status_code == 500


def _flanders_decision(live: RunningHub, **header: str) -> httpx.Response:
    body = json.loads((EXAMPLES / "be-vlg-wse" / "admissibility.decided.json").read_bytes())
    body["kop"]["berichtId"] = str(uuid.uuid4())
    body["kop"].update(header)
    with live.client("be-vlg-wse") as client:
        return client.post("/v1/messages", json=body)


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ({"dossiernummer": "NO-SUCH-CASE"}, "routing.unknown-case"),
        ({"antwoordOp": "00000000-0000-4000-8000-000000000000"}, "routing.unknown-correlation"),
        ({"bestemmeling": "be-dgo-min"}, "routing.destination-mismatch"),
    ],
)
def test_a_decision_must_belong_to_a_known_case_and_answer_a_known_message(
    live: RunningHub, header: dict[str, str], code: str
) -> None:
    filed, subject = _file_case(live)
    assert wait_until(lambda: live.hub.store.case(subject) is not None)
    fields = {"dossiernummer": subject, "antwoordOp": filed, **header}
    response = _flanders_decision(live, **fields)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code


def test_a_case_reference_is_one_case_whatever_its_spacing(live: RunningHub) -> None:
    filed, subject = _file_case(live)
    assert wait_until(lambda: live.hub.store.case(subject) is not None)
    response = _flanders_decision(live, dossiernummer=f" {subject} ", antwoordOp=filed)
    assert response.status_code == 202, response.text
    assert live.hub.store.message(response.json()["messageId"]).subject == subject  # type: ignore[union-attr]


def test_a_whole_case_logs_no_personal_data(live: RunningHub) -> None:
    from gateway.testing import capture_logs

    body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
    applicant = body["application"]["applicant"]
    secrets = [
        applicant["nationalRegisterNumber"],
        applicant["name"]["last"],
        applicant["name"]["first"],
        applicant["identity"]["passportNumber"],
        applicant["birth"]["date"],
    ]
    with capture_logs() as logs:
        _, subject = _file_case(live)
        assert wait_until(
            lambda: (
                sorted(r.type for r in live.hub.store.messages_for_subject(subject))
                == sorted(CASE_TYPES)
            )
        )
        assert _quiet(live)
    events = {e["event"] for e in logs.events()}
    assert {"message.accepted", "delivery.attempted"} <= events  # the capture saw the case
    for secret in secrets:
        assert secret not in logs.text, secret
