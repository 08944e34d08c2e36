"""The SOAP 1.1 adapter: against the sandbox Immigration Office, and against a scripted back office
that answers what a test tells it to (real HTTPS with mutual TLS on loopback in both cases)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from adapters import Outbound, ReceiverConfig, load_adapter
from adapters.soap import HUB_HEADER_NS, SoapAdapter, Wsdl
from gateway import wssec
from gateway.certs import DevPki, PartyIdentity, init_dev_pki
from gateway.errors import ConfigurationError
from gateway.mapping import MappingSet
from gateway.sandbox import Sandbox
from gateway.signing import SigningKey
from gateway.xml import SOAP11_NS, parse_xml, soap_payload
from tests.adapters.scripted import ScriptedOffice, scripted_office
from tests.gateway.test_wssec import xmlsec1_verify

pytestmark = pytest.mark.slow

HOME = Path(__file__).resolve().parents[2]
SCHEMAS = HOME / "schemas" / "be-fed-ibz"
IBZ = "urn:be:fgov:ibz:guichet:1"
PARTY = "be-fed-ibz"
PARTIES = (PartyIdentity(PARTY, "Office des étrangers", "0362475538"),)
# What the hub sends the Immigration Office: the outputs of its from-canonical golden pairs.
GOLDEN = sorted((HOME / "mappings" / PARTY / "from-canonical").glob("*.expected.xml"))
STATUS = HOME / "mappings" / PARTY / "from-canonical" / "status.updated.expected.xml"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki"), PARTIES)


@pytest.fixture(scope="module")
def sandbox(pki: DevPki) -> Iterator[Sandbox]:
    mappings = MappingSet.load(HOME)
    with Sandbox(mappings, pki, [PARTY], HOME / "examples", respond=False) as running:
        yield running


def config_for(endpoint: str, pki: DevPki) -> ReceiverConfig:
    return ReceiverConfig(
        party=PARTY,
        protocol="soap11",
        endpoint=endpoint,
        schema_dir=SCHEMAS,
        wsdl="ibz-backoffice.wsdl",
        client_cert=pki.hub_cert,
        client_key=pki.hub_key,
        ca=pki.ca_cert,
        timeout_s=5.0,
        signer=SigningKey.from_files(pki.hub_cert, pki.hub_key),
    )


@pytest.fixture
def adapter(sandbox: Sandbox, pki: DevPki) -> Iterator[SoapAdapter]:
    soap = SoapAdapter(config_for(sandbox.endpoints[PARTY], pki))
    yield soap
    soap.close()


def outbound(body: bytes, message_type: str = "status.updated") -> Outbound:
    return Outbound(
        message_id=str(uuid.uuid4()),
        message_type=message_type,
        receiver=PARTY,
        body=body,
        content_type="application/xml",
        trace_id=str(uuid.uuid4()),
        attempt=1,
    )


def test_the_entry_point_names_the_soap_adapter() -> None:
    assert load_adapter("soap11") is SoapAdapter


# ---------------------------------------------------------------------------------------------
# Against the sandbox


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name.removesuffix(".expected.xml"))
def test_delivers_what_the_hub_sends(
    sandbox: Sandbox, adapter: SoapAdapter, path: Path, pki: DevPki, tmp_path: Path
) -> None:
    message_type = path.name.removesuffix(".expected.xml")
    message = outbound(path.read_bytes(), message_type)
    result = adapter.deliver(message)
    assert (result.outcome, result.status, result.detail) == ("delivered", 200, "")
    got = sandbox.offices[PARTY].wait_for(lambda r: r.idempotency_key == message.message_id)
    assert got.message_type == message_type
    assert got.trace_id == message.trace_id
    sent, header = hub_signed(got.body)
    if message_type == "status.updated":  # once: an independent processor agrees
        delivered = tmp_path / "delivered.xml"
        delivered.write_bytes(got.body)
        checked = xmlsec1_verify(delivered, pki.hub_cert, "1.1")
        assert checked.returncode == 0 and checked.stderr.startswith("OK"), checked.stderr
    # The payload travels untouched (exclusive C14N: the envelope's namespaces aside).
    assert c14n(sent) == c14n(parse_xml(message.body))
    assert header is not None
    assert header.findtext(f"{{{HUB_HEADER_NS}}}MessageId") == message.message_id
    reply, _ = soap_payload(parse_xml(result.response))
    assert reply.tag == f"{{{IBZ}}}AccuseReception"
    assert reply.findtext(f"{{{IBZ}}}IdMessage") == got.message_id


def c14n(element: etree._Element) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=True)


def test_a_second_delivery_of_the_same_id_is_a_duplicate(
    sandbox: Sandbox, adapter: SoapAdapter
) -> None:
    office = sandbox.offices[PARTY]
    message = outbound(STATUS.read_bytes())
    before = office.duplicates
    first = adapter.deliver(message)
    again = adapter.deliver(message)
    assert first.outcome == again.outcome == "delivered"
    assert first.response == again.response
    assert office.duplicates == before + 1


def test_an_invalid_payload_gets_a_client_fault_and_is_rejected(
    sandbox: Sandbox, adapter: SoapAdapter
) -> None:
    body = STATUS.read_bytes().replace(b'code="NOTIFIE"', b'code="PERDU"')
    assert body != STATUS.read_bytes()
    result = adapter.deliver(outbound(body))
    assert (result.outcome, result.status) == ("rejected", 500)
    assert result.detail.startswith("SOAP Fault Client:")
    assert "PERDU" in result.detail


def test_a_payload_no_operation_takes_is_rejected_without_a_call(
    sandbox: Sandbox, adapter: SoapAdapter
) -> None:
    decision, _ = soap_payload(
        parse_xml((HOME / "examples" / PARTY / "residence.decided.xml").read_bytes())
    )
    count = len(sandbox.offices[PARTY].received)
    result = adapter.deliver(outbound(etree.tostring(decision), "residence.decided"))
    assert (result.outcome, result.status) == ("rejected", None)
    assert "DecisionSejour" in result.detail
    assert len(sandbox.offices[PARTY].received) == count


@pytest.mark.parametrize(
    ("status", "outcome", "fault"),
    [(503, "failed", "Server"), (500, "failed", "Server"), (400, "rejected", "Client")],
)
def test_an_injected_failure_is_classified(
    sandbox: Sandbox, adapter: SoapAdapter, status: int, outcome: str, fault: str
) -> None:
    sandbox.offices[PARTY].fail_next(1, status)
    message = outbound(STATUS.read_bytes())
    result = adapter.deliver(message)
    assert (result.outcome, result.status) == (outcome, status)
    assert result.detail.startswith(f"SOAP Fault {fault}")
    assert adapter.deliver(message).outcome == "delivered"


def test_a_back_office_that_is_down_fails(pki: DevPki) -> None:
    mappings = MappingSet.load(HOME)
    with Sandbox(mappings, pki, [PARTY], HOME / "examples", respond=False) as stopped:
        endpoint = stopped.endpoints[PARTY]
    soap = SoapAdapter(config_for(endpoint, pki))
    try:
        result = soap.deliver(outbound(STATUS.read_bytes()))
    finally:
        soap.close()
    assert (result.outcome, result.status) == ("failed", None)
    assert result.detail.startswith("transport")


# ---------------------------------------------------------------------------------------------
# Against a scripted back office: how replies are read


def envelope(body: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{SOAP11_NS}" xmlns:i="{IBZ}"><s:Body>{body}</s:Body></s:Envelope>'
    ).encode()


ACK = (
    "<i:AccuseReception><i:IdMessage>9d2e4b61-0c3f-4a8e-b7d5-6e1f2a3b4c5d</i:IdMessage>"
    "<i:DateReception>2027-01-21T09:05:13Z</i:DateReception></i:AccuseReception>"
)


def fault(code: str, string: str = "nope") -> str:
    return f"<s:Fault><faultcode>{code}</faultcode><faultstring>{string}</faultstring></s:Fault>"


@pytest.fixture(scope="module")
def scripted(pki: DevPki) -> Iterator[tuple[ScriptedOffice, str]]:
    with scripted_office(pki.party(PARTY), "/ibz", "text/xml") as scripted:
        yield scripted


@pytest.mark.parametrize(
    ("status", "reply", "outcome", "detail"),
    [
        (200, envelope(ACK), "delivered", ""),
        (500, envelope(fault("s:Client")), "rejected", "SOAP Fault Client: nope"),
        (500, envelope(fault("env:Client.Validation")), "rejected", "SOAP Fault Client.Validation"),
        (500, envelope(fault("s:MustUnderstand")), "rejected", "SOAP Fault MustUnderstand"),
        (500, envelope(fault("s:Server")), "failed", "SOAP Fault Server: nope"),
        (200, envelope(fault("s:Server")), "failed", "SOAP Fault Server"),
        (200, b"not xml at all", "failed", "malformed reply"),
        (200, b"<i:AccuseReception xmlns:i='urn:be:fgov:ibz:guichet:1'/>", "failed", "malformed"),
        (200, envelope("<i:Autre/>"), "failed", "malformed reply"),
        (200, envelope("<i:AccuseReception><i:Intrus/></i:AccuseReception>"), "failed", "WSDL"),
        (200, envelope("<i:AccuseReception/>"), "failed", "lacks IdMessage"),
        (502, b"<html>bad gateway</html>", "failed", "HTTP 502"),
        (404, b"", "rejected", "HTTP 404"),
        (503, b"", "failed", "HTTP 503"),
    ],
)
def test_replies_are_classified(
    scripted: tuple[ScriptedOffice, str],
    pki: DevPki,
    status: int,
    reply: bytes,
    outcome: str,
    detail: str,
) -> None:
    office, endpoint = scripted
    office.replies.append((status, reply))
    soap = SoapAdapter(config_for(endpoint, pki))
    try:
        result = soap.deliver(outbound(STATUS.read_bytes()))
    finally:
        soap.close()
    assert (result.outcome, result.status) == (outcome, status)
    assert detail in result.detail
    assert result.response == reply


def test_the_request_is_a_soap_11_call_of_the_wsdl_operation(
    scripted: tuple[ScriptedOffice, str], pki: DevPki
) -> None:
    office, endpoint = scripted
    office.replies.append((200, envelope(ACK)))
    message = outbound(STATUS.read_bytes())
    soap = SoapAdapter(config_for(endpoint, pki))
    try:
        assert soap.deliver(message).outcome == "delivered"
    finally:
        soap.close()
    headers, body = office.requests[-1]
    assert headers["content-type"] == "text/xml; charset=utf-8"
    assert headers["soapaction"] == f'"{IBZ}/NotifierStatut"'
    assert headers["belgov-trace-id"] == message.trace_id
    payload, header = hub_signed(body)
    assert payload.tag == f"{{{IBZ}}}NotificationStatut"
    assert header is not None
    assert header.findtext(f"{{{HUB_HEADER_NS}}}MessageId") == message.message_id
    assert header.findtext(f"{{{HUB_HEADER_NS}}}TraceId") == message.trace_id


# ---------------------------------------------------------------------------------------------
# The WSDL is read from local files only


def test_the_wsdl_maps_payload_elements_to_operations() -> None:
    wsdl = Wsdl.load(SCHEMAS / "ibz-backoffice.wsdl")
    assert {op.name: op.soap_action for op in wsdl.operations.values()} == {
        "NotifierRecevabilite": f"{IBZ}/NotifierRecevabilite",
        "NotifierDecisionTravail": f"{IBZ}/NotifierDecisionTravail",
        "NotifierStatut": f"{IBZ}/NotifierStatut",
        "NotifierDemandeTransmise": f"{IBZ}/NotifierDemandeTransmise",
        "NotifierRetraitDemande": f"{IBZ}/NotifierRetraitDemande",
        "NotifierReponseInformations": f"{IBZ}/NotifierReponseInformations",
        "NotifierRetraitAutorisationTravail": f"{IBZ}/NotifierRetraitAutorisationTravail",
        "NotifierRenouvellementTravail": f"{IBZ}/NotifierRenouvellementTravail",
        "NotifierOppositionChangementEmployeur": f"{IBZ}/NotifierOppositionChangementEmployeur",
        "NotifierFinOccupation": f"{IBZ}/NotifierFinOccupation",
        "NotifierRecours": f"{IBZ}/NotifierRecours",
        "NotifierDecisionCarteProfessionnelle": f"{IBZ}/NotifierDecisionCarteProfessionnelle",
        "NotifierProbleme": f"{IBZ}/NotifierProbleme",
    }
    assert {op.output_element for op in wsdl.operations.values()} == {f"{{{IBZ}}}AccuseReception"}


@pytest.mark.parametrize(
    "location",
    ["http://127.0.0.1:9/ibz.xsd", "https://example.invalid/ibz.xsd", "../elsewhere.xsd"],
)
def test_a_wsdl_importing_anything_but_local_files_is_refused(
    tmp_path: Path, location: str
) -> None:
    folder = tmp_path / "party"
    folder.mkdir()
    (tmp_path / "elsewhere.xsd").write_bytes((SCHEMAS / "ibz.xsd").read_bytes())
    wsdl = (
        (SCHEMAS / "ibz-backoffice.wsdl")
        .read_text()
        .replace('schemaLocation="ibz.xsd"', f'schemaLocation="{location}"')
    )
    (folder / "service.wsdl").write_text(wsdl)
    with pytest.raises(ConfigurationError):
        Wsdl.load(folder / "service.wsdl")


def test_a_soap_receiver_needs_a_wsdl(pki: DevPki) -> None:
    config = ReceiverConfig(PARTY, "soap11", "https://127.0.0.1:9/", SCHEMAS)
    with pytest.raises(ConfigurationError):
        SoapAdapter(config)


@pytest.mark.parametrize(("status", "seconds"), [(503, 45.0), (429, 3.0), (500, None)])
def test_retry_after_of_a_server_fault_is_read(
    sandbox: Sandbox, adapter: SoapAdapter, status: int, seconds: float | None
) -> None:
    sandbox.offices[PARTY].fail_next(1, status, retry_after=str(int(seconds or 45)))
    message = outbound(STATUS.read_bytes())
    result = adapter.deliver(message)
    assert (result.outcome, result.status, result.retry_after_s) == ("failed", status, seconds)
    assert adapter.deliver(message).retry_after_s is None


def hub_signed(body: bytes) -> tuple[etree._Element, etree._Element | None]:
    """The payload and header of a delivered envelope, whose WS-Security signature (the hub's)
    must verify."""
    verified = wssec.verify_envelope(parse_xml(body), now=datetime.now(UTC))
    assert "CN=guichet-hub" in verified.signature.certificate.subject.rfc4514_string()
    return verified.payload, verified.header
