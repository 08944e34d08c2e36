"""SOAP 1.2 beside SOAP 1.1: the envelope parser, the hub's endpoint, and a whole exchange.

The hub runs on a copy of the repository's data with a SOAP 1.2 party added
(``tests/soap12_party.py``): real HTTPS with mutual TLS on loopback, real sandbox back offices.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from lxml import etree

from adapters.soap import Wsdl
from gateway import wssec
from gateway.errors import PROBLEMS, ParseError
from gateway.testing import RunningHub, running_hub, wait_until
from gateway.xml import (
    SOAP11_NS,
    SOAP12_NS,
    parse_xml,
    soap_action_of,
    soap_content_type,
    soap_payload,
    soap_version,
    soap_version_of,
)
from tests.conftest import EXAMPLES
from tests.soap12_party import ACK, HUB_ACTION, HUB_WSDL, IBZ, PARTY, soap12_home

HUB = "urn:be:guichet:hub:1"
NS = {"env": SOAP12_NS, "s": SOAP11_NS, "h": HUB, "ibz": IBZ, "dg": ACK}
ENVELOPE12 = b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope">%s</env:Envelope>'
ENVELOPE11 = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">%s</s:Envelope>'


# ---------------------------------------------------------------------------------------------
# The parser: one set of rules for both versions


def refusal(body: bytes, expect: str | None = None) -> str:
    with pytest.raises(ParseError) as caught:
        soap_payload(parse_xml(body), expect=expect)  # type: ignore[arg-type]
    return caught.value.code


def test_a_soap12_envelope_gives_its_payload_header_and_version() -> None:
    envelope = parse_xml(
        ENVELOPE12 % b"<env:Header><x:Note xmlns:x='u'/></env:Header>"
        b"<env:Body>\n  <p:x xmlns:p='u'/>\n</env:Body>"
    )
    assert soap_version(envelope) == "1.2"
    payload, header = soap_payload(envelope, expect="1.2")
    assert payload.tag == "{u}x"
    assert header is not None and header[0].tag == "{u}Note"
    assert soap_version(parse_xml(ENVELOPE11 % b"<s:Body><p/></s:Body>")) == "1.1"


@pytest.mark.parametrize(
    "inside",
    [
        b"<env:Body><a/></env:Body><env:Body><b/></env:Body>",  # two Bodies
        b"<env:Body/>",  # no element
        b"<env:Body><a/><b/></env:Body>",  # two elements
        b"<env:Body>JUNK<a/></env:Body>",  # stray text
        b"<env:Body><a/></env:Body><env:Header/>",  # a Header after the Body
        b"<s:Body xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><a/></s:Body>",  # 1.1 Body
        b"",  # no Body
    ],
    ids=["two-bodies", "empty", "two-elements", "text", "late-header", "soap11-body", "no-body"],
)
def test_a_malformed_soap12_envelope_is_refused(inside: bytes) -> None:
    assert refusal(ENVELOPE12 % inside) == "soap.malformed"


@pytest.mark.parametrize("value", [b"true", b"1", b" true "])
def test_a_soap12_header_that_must_be_understood_is_refused(value: bytes) -> None:
    header = b"<env:Header><x:Sec xmlns:x='u' env:mustUnderstand='%s'/></env:Header>" % value
    assert refusal(ENVELOPE12 % (header + b"<env:Body><p/></env:Body>")) == "soap.must-understand"


@pytest.mark.parametrize("value", [b"false", b"0"])
def test_a_soap12_header_that_need_not_be_understood_is_ignored(value: bytes) -> None:
    header = b"<env:Header><x:Sec xmlns:x='u' env:mustUnderstand='%s'/></env:Header>" % value
    assert (
        soap_payload(parse_xml(ENVELOPE12 % (header + b"<env:Body><p/></env:Body>")))[0].tag == "p"
    )


def test_an_envelope_of_the_other_version_is_a_version_mismatch() -> None:
    soap11 = ENVELOPE11 % b"<s:Body><p/></s:Body>"
    soap12 = ENVELOPE12 % b"<env:Body><p/></env:Body>"
    assert refusal(soap11, expect="1.2") == "soap.version-mismatch"
    assert refusal(soap12, expect="1.1") == "soap.version-mismatch"
    assert soap_payload(parse_xml(soap12))[0].tag == "p"  # no expectation: either version
    assert refusal(b"<Envelope><Body><p/></Body></Envelope>") == "soap.malformed"
    assert refusal(b"<env:Envelope xmlns:env='urn:soap:1.3'/>", expect="1.2") == "soap.malformed"


def test_the_http_binding_of_each_version() -> None:
    action = "urn:guichet:test:soap12:1/X"
    content_type = soap_content_type("1.2", action)
    assert content_type == f'application/soap+xml; charset=utf-8; action="{action}"'
    assert soap_version_of(content_type) == "1.2"
    assert soap_action_of(content_type, '"urn:ignored"') == action  # SOAPAction means nothing
    assert soap_action_of("Application/SOAP+XML;action=urn:a/b", None) == "urn:a/b"
    assert soap_action_of("application/soap+xml; charset=utf-8", None) is None
    assert soap_content_type("1.1") == "text/xml; charset=utf-8"
    assert soap_version_of("text/xml; charset=utf-8") == "1.1"
    assert soap_version_of("") == "1.1"
    assert soap_action_of("text/xml", '"urn:a"') == "urn:a"
    assert soap_action_of("text/xml", '""') is None


def test_the_version_mismatch_code_is_a_client_error() -> None:
    problem = PROBLEMS["soap.version-mismatch"]
    assert (problem.status, problem.soap_fault) == (400, "Client")


# ---------------------------------------------------------------------------------------------
# The hub's endpoint, in a hub with a SOAP 1.2 party


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return soap12_home(tmp_path_factory.mktemp("soap12"))


@pytest.fixture(scope="module")
def live(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with running_hub(
        tmp_path_factory.mktemp("data"),
        home=home,
        delivery_backoff_s=0.05,
        max_body_bytes=64 * 1024,
    ) as running:
        yield running


def _file_case(live: RunningHub) -> tuple[str, str]:
    """An application from the portal (Ghent: Flanders decides); its id and case."""
    body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
    message_id = str(uuid.uuid4())
    subject = f"SP-S12-{uuid.uuid4().hex[:8]}"
    body["header"].update(messageId=message_id, caseReference=subject)
    with live.client("be-platform") as client:
        response = client.post("/v1/messages", json=body)
    assert response.status_code == 202, response.text
    assert wait_until(lambda: live.hub.store.case(subject) is not None)
    return message_id, subject


def _decision(home: Path, answers: str, subject: str, message_id: str | None = None) -> bytes:
    """The party's residence decision (a SOAP 1.2 envelope) in a case, answering a message."""
    envelope = parse_xml((home / "examples" / PARTY / "residence.decided.xml").read_bytes())
    for field, value in (
        ("IdMessage", message_id or str(uuid.uuid4())),
        ("Dossier", subject),
        ("EnReponseA", answers),
    ):
        envelope.xpath(f"//ibz:Entete/ibz:{field}", namespaces=NS)[0].text = value  # type: ignore[index,union-attr]
    return etree.tostring(envelope)


def _post12(
    live: RunningHub, body: bytes, action: str | None = HUB_ACTION, party: str = PARTY
) -> httpx.Response:
    with live.client(party) as client:
        return client.post(
            "/soap/v1", content=body, headers={"Content-Type": soap_content_type("1.2", action)}
        )


def _fault12(response: httpx.Response, status: int = 400, value: str = "env:Sender") -> str:
    """The h:problem code of a SOAP 1.2 Fault, after checking its form."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/soap+xml; charset=utf-8"
    envelope = parse_xml(response.content)
    fault, _ = soap_payload(envelope, expect="1.2")
    assert fault.tag == f"{{{SOAP12_NS}}}Fault"
    assert fault.xpath("string(env:Code/env:Value)", namespaces=NS) == value
    text = fault.find("env:Reason/env:Text", namespaces=NS)
    assert text is not None and text.text
    assert text.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    problem = fault.find("env:Detail/h:problem", namespaces=NS)
    assert problem is not None
    assert problem.findtext("h:traceId", namespaces=NS) == response.headers["BelGov-Trace-Id"]
    code = problem.findtext("h:code", namespaces=NS) or ""
    assert problem.findtext("h:type", namespaces=NS) == f"urn:guichet:problem:{code}"
    return code


@pytest.mark.slow
def test_a_residence_decision_over_soap12_gets_a_soap12_receipt(
    live: RunningHub, home: Path
) -> None:
    filed, subject = _file_case(live)
    message_id = str(uuid.uuid4())
    body = _decision(home, filed, subject, message_id)
    response = _post12(live, body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/soap+xml; charset=utf-8"
    envelope = parse_xml(response.content)
    assert soap_version(envelope) == "1.2"
    receipt, _ = soap_payload(envelope, expect="1.2")
    assert receipt.tag == f"{{{HUB}}}receipt"
    # As the party's WSDL says (zeep reads the reply with the operation's SOAP 1.2 output).
    hub_wsdl = Wsdl.load(home / "schemas" / PARTY / HUB_WSDL, root=home / "schemas")
    (operation,) = hub_wsdl.operations.values()
    assert operation.version == "1.2"
    operation.check_output(envelope)
    assert receipt.findtext("h:messageId", namespaces=NS) == message_id
    assert receipt.findtext("h:status", namespaces=NS) == "accepted"
    receivers = receipt.xpath("h:receivers/h:receiver/text()", namespaces=NS)
    assert sorted(receivers) == ["be-platform", "be-vlg-wse"]  # type: ignore[arg-type]
    # Sealed as a SOAP 1.2 exchange, the bytes as they came.
    index = int(receipt.findtext("h:leafIndex", namespaces=NS) or -1)
    record = json.loads(live.hub.store.leaves(index, index + 1)[0].record)
    assert record["event"] == "exchange.accepted"
    assert record["inbound"]["transport"] == "soap12"
    assert record["inbound"]["contentType"].startswith("application/soap+xml")
    # The same message again: the original receipt, in SOAP 1.2.
    again = _post12(live, body)
    assert again.status_code == 200
    duplicate, _ = soap_payload(parse_xml(again.content), expect="1.2")
    assert duplicate.findtext("h:status", namespaces=NS) == "duplicate"
    # Translated and delivered onwards, like any residence decision.
    portal = live.sandbox.offices["be-platform"].wait_for(
        lambda r: r.message_id == message_id, timeout=20
    )
    assert (portal.message_type, portal.subject) == ("residence.decided", subject)
    assert json.loads(portal.body)["residenceDecision"]["annexNumber"] == 46


@pytest.mark.slow
def test_a_whole_case_reaches_the_soap12_office_and_its_answer_the_hub(live: RunningHub) -> None:
    """Flanders' work decision is delivered to the SOAP 1.2 office; the office answers with its
    residence decision over SOAP 1.2, which the hub accepts and delivers onwards."""
    _, subject = _file_case(live)
    office = live.sandbox.offices[PARTY]
    received = office.wait_for(
        lambda r: r.subject == subject and r.message_type == "workAuthorisation.decided",
        timeout=20,
    )
    delivered = parse_xml(received.body)
    assert soap_version(delivered) == "1.2"
    # Signed by the hub (WS-Security in SOAP 1.2's envelope too).
    verified = wssec.verify_envelope(delivered, now=datetime.now(UTC))
    payload, header = verified.payload, verified.header
    assert payload.tag == f"{{{IBZ}}}NotificationDecisionTravail"
    assert header is not None and header.findtext("h:MessageId", namespaces=NS)
    # Its answer went to the hub over SOAP 1.2, and came back as a SOAP 1.2 receipt.
    sent = office.wait_for_sent(lambda s: s.subject == subject, timeout=20)
    assert (sent.message_type, sent.status, sent.error) == ("residence.decided", 200, None)
    assert soap_version(parse_xml(sent.body)) == "1.2"
    receipt, _ = soap_payload(parse_xml(sent.response), expect="1.2")
    assert receipt.findtext("h:status", namespaces=NS) == "accepted"
    store = live.hub.store

    def onwards() -> bool:
        deliveries = store.deliveries(sent.message_id)
        return len(deliveries) == 2 and all(d.state == "delivered" for d in deliveries)

    assert wait_until(onwards), store.deliveries(sent.message_id)
    row = store.message(sent.message_id)
    assert row is not None and (row.sender, row.type) == (PARTY, "residence.decided")

    # The hub's delivery to the office was sealed as delivered, with the office's 1.2 answer.
    def work() -> tuple[str, int | None]:
        found = next(d for d in store.deliveries(received.message_id) if d.receiver == PARTY)
        return found.state, found.last_status

    assert wait_until(lambda: work() == ("delivered", 200)), work()
    assert not office.rejected
    # The evidence names what went on the wire to the office: a SOAP 1.2 envelope.
    leaf_index = store.message(received.message_id).leaf_index  # type: ignore[union-attr]
    record = json.loads(store.leaves(leaf_index, leaf_index + 1)[0].record)
    to_office = next(o for o in record["outbound"] if o["receiver"] == PARTY)
    assert to_office["contentType"] == "application/soap+xml; charset=utf-8"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda home: b"<env:Envelope", "xml.malformed"),
        (
            lambda home: _decision(home, str(uuid.uuid4()), "SP-1").replace(
                b"<ibz:Dossier>", b"<ibz:Dossier>not a case id ", 1
            ),
            "schema.invalid",
        ),
        (
            lambda home: _decision(home, str(uuid.uuid4()), "SP-1").replace(
                SOAP12_NS.encode(), SOAP11_NS.encode()
            ),
            "soap.version-mismatch",
        ),
        (lambda home: ENVELOPE12 % b"<env:Body><a/><b/></env:Body>", "soap.malformed"),
        (lambda home: b"<x/>" + b" " * (65 * 1024), "request.too-large"),  # before parsing
    ],
    ids=["malformed", "invalid", "version-mismatch", "two-elements", "too-large"],
)
def test_a_soap12_caller_gets_a_soap12_sender_fault(
    live: RunningHub, home: Path, make: Callable[[Path], bytes], code: str
) -> None:
    response = _post12(live, make(home))
    assert _fault12(response) == code


@pytest.mark.slow
def test_a_soap12_fault_tells_where_the_error_is(live: RunningHub, home: Path) -> None:
    broken = _decision(home, str(uuid.uuid4()), "SP-1").replace(
        b"<ibz:Dossier>", b"<ibz:Dossier>not a case id ", 1
    )
    fault, _ = soap_payload(parse_xml(_post12(live, broken).content))
    problem = fault.find("env:Detail/h:problem", namespaces=NS)
    assert problem is not None
    assert "Dossier" in (problem.findtext("h:path", namespaces=NS) or "")
    assert problem.findtext("h:schemaId", namespaces=NS) == PARTY
    assert problem.findtext("h:status", namespaces=NS) == "422"  # the problem's own status
    assert problem.findtext("h:line", namespaces=NS)


@pytest.mark.slow
def test_the_action_parameter_must_match_the_payload(live: RunningHub, home: Path) -> None:
    filed, subject = _file_case(live)
    wrong = _post12(live, _decision(home, filed, subject), action="urn:guichet:test:other")
    assert _fault12(wrong) == "soap.action-mismatch"
    assert b"urn:guichet:test:other" in wrong.content
    # SOAP 1.2's action is optional; a SOAPAction header beside the media type means nothing.
    with live.client(PARTY) as client:
        without = client.post(
            "/soap/v1",
            content=_decision(home, filed, subject),
            headers={"Content-Type": soap_content_type("1.2"), "SOAPAction": '"urn:nothing"'},
        )
    assert without.status_code == 200, without.text


@pytest.mark.slow
def test_a_header_that_must_be_understood_is_a_must_understand_fault(
    live: RunningHub, home: Path
) -> None:
    decision = _decision(home, str(uuid.uuid4()), "SP-1")
    assert decision.count(b"<soap:Body>") == 1  # the example's prefix for the SOAP 1.2 namespace
    envelope = decision.replace(
        b"<soap:Body>",
        b"<soap:Header><x:Sec xmlns:x='urn:x' soap:mustUnderstand='true'/></soap:Header>"
        b"<soap:Body>",
    )
    # SOAP 1.2 HTTP binding: env:MustUnderstand travels with 500.
    assert _fault12(_post12(live, envelope), 500, "env:MustUnderstand") == "soap.must-understand"


@pytest.mark.slow
def test_soap11_callers_keep_soap11_answers(live: RunningHub, home: Path) -> None:
    """The same refusals for a SOAP 1.1 caller, in SOAP 1.1, as before."""
    soap12 = _decision(home, str(uuid.uuid4()), "SP-1")
    with live.client("be-fed-ibz") as client:
        mismatch = client.post(
            "/soap/v1", content=soap12, headers={"Content-Type": "text/xml; charset=utf-8"}
        )
        malformed = client.post(
            "/soap/v1", content=b"<soap:Envelope", headers={"Content-Type": "text/xml"}
        )
    for response, code in ((mismatch, "soap.version-mismatch"), (malformed, "xml.malformed")):
        assert response.status_code == 500
        assert response.headers["content-type"] == "text/xml; charset=utf-8"
        fault, _ = soap_payload(parse_xml(response.content), expect="1.1")
        assert fault.findtext("faultcode") == "soap:Client"
        assert fault.xpath("string(detail/h:problem/h:code)", namespaces=NS) == code


@pytest.mark.slow
def test_the_soap12_partys_wsdl_is_served_with_the_hubs_address(live: RunningHub) -> None:
    with live.client(PARTY) as client:
        wsdl = client.get("/soap/v1", params={"wsdl": ""})
        hub_xsd = client.get("/soap/v1", params={"xsd": "../hub/hub.xsd"})
    assert wsdl.status_code == 200
    assert f'<soap12:address location="{live.url}/soap/v1"/>' in wsdl.text
    assert f'schemaLocation="{live.url}/soap/v1?xsd=ibz.xsd"' in wsdl.text
    assert hub_xsd.status_code == 200
