"""The SOAP adapter over SOAP 1.2: against a sandbox office whose WSDL binds SOAP 1.2, and against
a scripted back office that answers what a test tells it to (real HTTPS with mutual TLS on
loopback in both cases). The office's WSDL is tests/fixtures/soap12/backoffice12.wsdl."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from lxml import etree

from adapters import Outbound, ReceiverConfig, load_adapter
from adapters.soap import HUB_HEADER_NS, Soap12Adapter, SoapAdapter, Wsdl, build_envelope
from gateway import wssec
from gateway.certs import DevPki, PartyIdentity, init_dev_pki
from gateway.mapping import MappingSet
from gateway.sandbox import Sandbox
from gateway.service.tls import client_ssl_context
from gateway.signatures import SigningAuth
from gateway.signing import SigningKey
from gateway.xml import SOAP11_NS, SOAP12_NS, parse_xml, soap_payload, soap_version
from tests.adapters.scripted import ScriptedOffice, scripted_office
from tests.conftest import HOME
from tests.soap12_party import ACK, ACTION, IBZ, PARTY, WSDL, soap12_home

pytestmark = pytest.mark.slow

# What the hub sends the party: the Immigration Office's golden work decision (its format).
DECISION = (
    HOME / "mappings" / "be-fed-ibz" / "from-canonical" / "workAuthorisation.decided.expected.xml"
)
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return soap12_home(tmp_path_factory.mktemp("soap12"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(
        tmp_path_factory.mktemp("pki"), (PartyIdentity(PARTY, "SOAP 1.2 test party", "0207777760"),)
    )


@pytest.fixture(scope="module")
def sandbox(home: Path, pki: DevPki) -> Iterator[Sandbox]:
    with Sandbox(MappingSet.load(home), pki, [PARTY], home / "examples", respond=False) as running:
        yield running


def config_for(home: Path, endpoint: str, pki: DevPki, wsdl: str = WSDL) -> ReceiverConfig:
    return ReceiverConfig(
        party=PARTY,
        protocol="soap12",
        endpoint=endpoint,
        schema_dir=home / "schemas" / PARTY,
        wsdl=wsdl,
        client_cert=pki.hub_cert,
        client_key=pki.hub_key,
        ca=pki.ca_cert,
        timeout_s=5.0,
        signer=SigningKey.from_files(pki.hub_cert, pki.hub_key),
    )


@pytest.fixture
def adapter(home: Path, sandbox: Sandbox, pki: DevPki) -> Iterator[SoapAdapter]:
    soap = Soap12Adapter(config_for(home, sandbox.endpoints[PARTY], pki))
    yield soap
    soap.close()


def outbound(body: bytes) -> Outbound:
    return Outbound(
        message_id=str(uuid.uuid4()),
        message_type="workAuthorisation.decided",
        receiver=PARTY,
        body=body,
        content_type="application/xml",
        trace_id=str(uuid.uuid4()),
        attempt=1,
    )


def test_the_soap12_entry_point_names_the_soap12_adapter() -> None:
    assert load_adapter("soap12") is Soap12Adapter
    assert load_adapter("soap11") is SoapAdapter
    assert issubclass(Soap12Adapter, SoapAdapter)


def test_the_wsdl_tells_the_operation_is_soap12(home: Path) -> None:
    wsdl = Wsdl.load(home / "schemas" / PARTY / WSDL)
    assert wsdl.versions == {"1.2"}
    (operation,) = wsdl.operations.values()
    assert (operation.name, operation.version, operation.soap_action) == (
        "ArbeitsentscheidungMitteilen",
        "1.2",
        ACTION,
    )
    assert operation.input_element == f"{{{IBZ}}}NotificationDecisionTravail"
    assert operation.output_element == f"{{{ACK}}}Empfangsbestaetigung"
    assert operation.content_type == f'application/soap+xml; charset=utf-8; action="{ACTION}"'


# ---------------------------------------------------------------------------------------------
# Against the sandbox office (SOAP 1.2)


def test_delivers_in_soap12_and_reads_the_acknowledgement(
    sandbox: Sandbox, adapter: SoapAdapter
) -> None:
    message = outbound(DECISION.read_bytes())
    result = adapter.deliver(message)
    assert (result.outcome, result.status, result.detail) == ("delivered", 200, "")
    got = sandbox.offices[PARTY].wait_for(lambda r: r.idempotency_key == message.message_id)
    assert (got.message_type, got.trace_id) == ("workAuthorisation.decided", message.trace_id)
    envelope = parse_xml(got.body)
    assert soap_version(envelope) == "1.2"
    payload, header = hub_signed(got.body)
    assert payload.tag == f"{{{IBZ}}}NotificationDecisionTravail"
    assert header is not None
    assert header.findtext(f"{{{HUB_HEADER_NS}}}MessageId") == message.message_id
    reply = parse_xml(result.response)
    assert soap_version(reply) == "1.2"
    acknowledgement, _ = soap_payload(reply)
    assert acknowledgement.tag == f"{{{ACK}}}Empfangsbestaetigung"
    assert acknowledgement.findtext(f"{{{ACK}}}NachrichtId") == got.message_id


def test_an_invalid_payload_gets_a_sender_fault_and_is_rejected(
    sandbox: Sandbox, adapter: SoapAdapter
) -> None:
    body = DECISION.read_bytes().replace(b"<ibz:Dossier>", b"<ibz:Dossier>not a case ", 1)
    assert body != DECISION.read_bytes()
    result = adapter.deliver(outbound(body))
    assert (result.outcome, result.status) == ("rejected", 400)  # SOAP 1.2 HTTP binding
    assert result.detail.startswith("SOAP Fault Sender:")
    fault, _ = soap_payload(parse_xml(result.response), expect="1.2")
    assert fault.findtext(f"{{{SOAP12_NS}}}Code/{{{SOAP12_NS}}}Value") == "env:Sender"
    assert fault.find(f"{{{SOAP12_NS}}}Reason/{{{SOAP12_NS}}}Text").get(XML_LANG) == "en"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("status", "outcome", "fault"),
    [(503, "failed", "Receiver"), (500, "failed", "Receiver"), (400, "rejected", "Sender")],
)
def test_an_injected_failure_is_classified(
    sandbox: Sandbox, adapter: SoapAdapter, status: int, outcome: str, fault: str
) -> None:
    sandbox.offices[PARTY].fail_next(1, status)
    message = outbound(DECISION.read_bytes())
    result = adapter.deliver(message)
    assert (result.outcome, result.status) == (outcome, status)
    assert result.detail.startswith(f"SOAP Fault {fault}")
    assert soap_version(parse_xml(result.response)) == "1.2"
    assert adapter.deliver(message).outcome == "delivered"


def test_the_soap12_office_refuses_soap11_and_a_wrong_action(sandbox: Sandbox, pki: DevPki) -> None:
    payload = parse_xml(DECISION.read_bytes())
    office = sandbox.offices[PARTY]
    before = len(office.received)
    signer = SigningAuth(SigningKey.from_files(pki.hub_cert, pki.hub_key))
    with httpx.Client(verify=client_ssl_context(pki.hub), timeout=5, auth=signer) as client:
        soap11 = client.post(
            sandbox.endpoints[PARTY],
            content=build_envelope(payload),
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{ACTION}"'},
        )
        wrong_action = client.post(
            sandbox.endpoints[PARTY],
            content=build_envelope(payload, version="1.2"),
            headers={"Content-Type": 'application/soap+xml; charset=utf-8; action="urn:other"'},
        )
    # A SOAP 1.1 call is answered in SOAP 1.1: this office speaks SOAP 1.2 only.
    assert soap11.status_code == 500
    assert soap11.headers["content-type"].startswith("text/xml")
    fault, _ = soap_payload(parse_xml(soap11.content), expect="1.1")
    assert fault.findtext("faultcode") == "soap:VersionMismatch"
    assert wrong_action.status_code == 400
    assert wrong_action.headers["content-type"].startswith("application/soap+xml")
    fault, _ = soap_payload(parse_xml(wrong_action.content), expect="1.2")
    assert "urn:other" in (fault.findtext(f"{{{SOAP12_NS}}}Reason/{{{SOAP12_NS}}}Text") or "")
    assert len(office.received) == before


# ---------------------------------------------------------------------------------------------
# Against a scripted back office: what is sent, how replies are read


@pytest.fixture(scope="module")
def scripted(pki: DevPki) -> Iterator[tuple[ScriptedOffice, str]]:
    with scripted_office(pki.party(PARTY), "/dg", "application/soap+xml") as scripted:
        yield scripted


def envelope(body: str, namespace: str = SOAP12_NS) -> bytes:
    return (
        f'<e:Envelope xmlns:e="{namespace}" xmlns:d="{ACK}"><e:Body>{body}</e:Body></e:Envelope>'
    ).encode()


ACKNOWLEDGEMENT = (
    "<d:Empfangsbestaetigung><d:NachrichtId>9d2e4b61-0c3f-4a8e-b7d5-6e1f2a3b4c5d</d:NachrichtId>"
    "<d:EmpfangenAm>2027-01-21T09:05:13Z</d:EmpfangenAm></d:Empfangsbestaetigung>"
)


def fault12(value: str, text: str = "nein") -> str:
    return (
        f"<e:Fault><e:Code><e:Value>e:{value}</e:Value></e:Code>"
        f'<e:Reason><e:Text xml:lang="de">{text}</e:Text></e:Reason></e:Fault>'
    )


@pytest.mark.parametrize(
    ("status", "reply", "outcome", "detail"),
    [
        (200, envelope(ACKNOWLEDGEMENT), "delivered", ""),
        (400, envelope(fault12("Sender")), "rejected", "SOAP Fault Sender: nein"),
        (500, envelope(fault12("Receiver")), "failed", "SOAP Fault Receiver: nein"),
        (500, envelope(fault12("MustUnderstand")), "rejected", "SOAP Fault MustUnderstand"),
        (500, envelope(fault12("VersionMismatch")), "rejected", "SOAP Fault VersionMismatch"),
        (500, envelope(fault12("DataEncodingUnknown")), "rejected", "DataEncodingUnknown"),
        (200, envelope(fault12("Receiver")), "failed", "SOAP Fault Receiver"),
        # A SOAP 1.1 Fault is a fault all the same; a SOAP 1.1 acknowledgement is no answer.
        (
            500,
            envelope("<e:Fault><faultcode>e:Client</faultcode></e:Fault>", SOAP11_NS),
            "rejected",
            "SOAP Fault Client",
        ),
        (200, envelope(ACKNOWLEDGEMENT, SOAP11_NS), "failed", "SOAP 1.1 envelope where SOAP 1.2"),
        (200, envelope("<d:Empfangsbestaetigung/>"), "failed", "lacks NachrichtId"),
        (503, b"", "failed", "HTTP 503"),
        (415, b"", "rejected", "HTTP 415"),
    ],
)
def test_soap12_replies_are_classified(
    home: Path,
    scripted: tuple[ScriptedOffice, str],
    pki: DevPki,
    status: int,
    reply: bytes,
    outcome: str,
    detail: str,
) -> None:
    office, endpoint = scripted
    office.replies.append((status, reply))
    soap = Soap12Adapter(config_for(home, endpoint, pki))
    try:
        result = soap.deliver(outbound(DECISION.read_bytes()))
    finally:
        soap.close()
    assert (result.outcome, result.status) == (outcome, status)
    assert detail in result.detail
    assert result.response == reply


def test_the_request_is_a_soap12_call_of_the_wsdl_operation(
    home: Path, scripted: tuple[ScriptedOffice, str], pki: DevPki
) -> None:
    office, endpoint = scripted
    office.replies.append((200, envelope(ACKNOWLEDGEMENT)))
    message = outbound(DECISION.read_bytes())
    soap = Soap12Adapter(config_for(home, endpoint, pki))
    try:
        assert soap.deliver(message).outcome == "delivered"
    finally:
        soap.close()
    headers, body = office.requests[-1]
    assert headers["content-type"] == f'application/soap+xml; charset=utf-8; action="{ACTION}"'
    assert "soapaction" not in headers  # SOAP 1.2 carries the action in the media type
    assert headers["belgov-trace-id"] == message.trace_id
    envelope_ = parse_xml(body)
    assert soap_version(envelope_) == "1.2"
    payload, header = hub_signed(body)
    assert payload.tag == f"{{{IBZ}}}NotificationDecisionTravail"
    assert header is not None
    assert header.findtext(f"{{{HUB_HEADER_NS}}}MessageId") == message.message_id
    assert header.findtext(f"{{{HUB_HEADER_NS}}}TraceId") == message.trace_id


def _both_bindings(home: Path) -> str:
    """The fixture's WSDL with a SOAP 1.1 binding (and port) of the same operation beside."""
    folder = home / "schemas" / PARTY
    text = (folder / WSDL).read_text()
    start, end = (
        text.index("  <wsdl:binding"),
        text.index("</wsdl:binding>") + len("</wsdl:binding>"),
    )
    binding11 = (
        text[start:end]
        .replace("<soap12:", "<soap11:")
        .replace('soapActionRequired="true" ', "")
        .replace("Soap12BackOfficeBinding", "Soap11BackOfficeBinding")
    )
    port11 = (
        '    <wsdl:port name="Soap11BackOfficePort" binding="tns:Soap11BackOfficeBinding">\n'
        '      <soap11:address location="https://localhost:0/"/>\n'
        "    </wsdl:port>\n"
    )
    text = text[:end] + "\n\n" + binding11 + text[end:]
    text = text.replace("  </wsdl:service>", port11 + "  </wsdl:service>")
    text = text.replace(
        'xmlns:soap12="', 'xmlns:soap11="http://schemas.xmlsoap.org/wsdl/soap/"\n  xmlns:soap12="'
    )
    (folder / "both.wsdl").write_text(text)
    return "both.wsdl"


def test_a_wsdl_binding_both_versions_is_called_in_the_adapters(
    home: Path, scripted: tuple[ScriptedOffice, str], pki: DevPki
) -> None:
    name = _both_bindings(home)
    wsdl = Wsdl.load(home / "schemas" / PARTY / name)
    assert wsdl.versions == {"1.1", "1.2"}
    assert next(iter(wsdl.operations.values())).version == "1.1"  # the default preference
    assert next(iter(Wsdl.load(wsdl.path, prefer="1.2").operations.values())).version == "1.2"
    office, endpoint = scripted
    sent: dict[str, dict[str, str]] = {}
    for factory, reply in ((SoapAdapter, SOAP11_NS), (Soap12Adapter, SOAP12_NS)):
        office.replies.append((200, envelope(ACKNOWLEDGEMENT, reply)))
        adapter = factory(config_for(home, endpoint, pki, wsdl=name))
        try:
            assert adapter.deliver(outbound(DECISION.read_bytes())).outcome == "delivered"
        finally:
            adapter.close()
        headers, body = office.requests[-1]
        sent[soap_version(parse_xml(body))] = headers
    assert sent["1.1"]["content-type"] == "text/xml; charset=utf-8"
    assert sent["1.1"]["soapaction"] == f'"{ACTION}"'
    assert sent["1.2"]["content-type"].startswith("application/soap+xml")
    assert "soapaction" not in sent["1.2"]


def test_the_reply_envelope_names_its_version() -> None:
    payload = parse_xml(f"<d:x xmlns:d='{ACK}'/>".encode())
    assert soap_version(parse_xml(build_envelope(payload))) == "1.1"
    assert soap_version(parse_xml(build_envelope(payload, version="1.2"))) == "1.2"


def hub_signed(body: bytes) -> tuple[etree._Element, etree._Element | None]:
    """The payload and header of a delivered envelope, whose WS-Security signature (the hub's)
    must verify."""
    verified = wssec.verify_envelope(parse_xml(body), now=datetime.now(UTC))
    assert "CN=guichet-hub" in verified.signature.certificate.subject.rfc4514_string()
    return verified.payload, verified.header
