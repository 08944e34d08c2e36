"""The sandbox back offices, over real HTTPS with mutual TLS on loopback.

The hub side is played by plain httpx clients with the hub's certificate, and, for the responder,
by a tiny fake hub (a real server with the hub's certificate) that records what it is sent.
"""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from adapters.soap import HUB_HEADER_NS, build_envelope
from gateway import wssec
from gateway.certs import DevPki, PartyIdentity, identity_of, init_dev_pki
from gateway.errors import ConfigurationError
from gateway.mapping import CANONICAL_NS, MappingSet
from gateway.sandbox import FieldPath, Sandbox, load_profiles
from gateway.service.server import ServerThread
from gateway.service.tls import client_certificate, client_ssl_context
from gateway.signatures import SigningAuth
from gateway.signing import SigningKey
from gateway.testing import wait_until
from gateway.xml import SOAP11_NS, parse_xml, soap_payload

pytestmark = pytest.mark.slow

HOME = Path(__file__).resolve().parents[1]
EXAMPLES = HOME / "examples"
PARTIES = (
    PartyIdentity("be-platform", "Working in Belgium", "0316380940"),
    PartyIdentity("be-vlg-wse", "Departement WSE", "0316380841"),
    PartyIdentity("be-fed-ibz", "Office des étrangers", "0362475538"),
)
IBZ = "urn:be:fgov:ibz:guichet:1"
TIMEOUT = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki"), PARTIES)


@pytest.fixture(scope="module")
def mappings() -> MappingSet:
    return MappingSet.load(HOME)


@pytest.fixture
def hub_client(pki: DevPki) -> Iterator[httpx.Client]:
    """The hub's side: its certificate, and its signature on every delivery."""
    signer = SigningAuth(SigningKey.from_files(pki.hub_cert, pki.hub_key))
    with httpx.Client(verify=client_ssl_context(pki.hub), timeout=TIMEOUT, auth=signer) as c:
        yield c


@pytest.fixture(scope="module")
def quiet(mappings: MappingSet, pki: DevPki) -> Iterator[Sandbox]:
    """All three back offices, recording only."""
    parties = [p.party_id for p in PARTIES]
    with Sandbox(mappings, pki, parties, EXAMPLES, respond=False) as sandbox:
        yield sandbox


def golden(party: str, message_type: str) -> Path:
    folder = HOME / "mappings" / party / "from-canonical"
    return next(folder.glob(f"{message_type}.expected.*"))


def fresh_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------------------------
# The fake hub


@dataclass(frozen=True)
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    caller: str | None


class FakeHub:
    """Records every POST; answers 202 (REST) or a SOAP envelope with a receipt (SOAP)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Condition()
        self.app = Starlette(
            routes=[
                Route("/v1/messages", self._record, methods=["POST"]),
                Route("/soap/v1", self._record, methods=["POST"]),
            ]
        )

    async def _record(self, request: Request) -> Response:
        cert = client_certificate(request.scope)
        identity = identity_of(cert) if cert is not None else None
        call = Call(
            request.url.path,
            {k.lower(): v for k, v in request.headers.items()},
            await request.body(),
            identity.name if identity else None,
        )
        with self._lock:
            self.calls.append(call)
            self._lock.notify_all()
        if request.url.path == "/soap/v1":
            return Response(b"<ok/>", 200, media_type="text/xml")
        return Response(b'{"accepted": true}', 202, media_type="application/json")

    def wait(self, count: int, timeout: float = TIMEOUT) -> list[Call]:
        with self._lock:
            assert self._lock.wait_for(lambda: len(self.calls) >= count, timeout), self.calls
            return list(self.calls)


@pytest.fixture
def fake_hub(pki: DevPki) -> Iterator[tuple[FakeHub, str]]:
    hub = FakeHub()
    with ServerThread(hub.app, tls=pki.hub) as server:
        yield hub, server.url


@pytest.fixture
def responding(
    mappings: MappingSet, pki: DevPki, fake_hub: tuple[FakeHub, str]
) -> Iterator[Sandbox]:
    parties = [p.party_id for p in PARTIES]
    with Sandbox(mappings, pki, parties, EXAMPLES) as sandbox:
        sandbox.hub_url = fake_hub[1]
        yield sandbox


# ---------------------------------------------------------------------------------------------
# The profiles agree with the mappings


def test_field_paths_agree_with_the_envelope_mappings(mappings: MappingSet) -> None:
    """sandbox.toml reads id, subject and correlation where the mappings map the envelope's."""
    profiles = load_profiles(EXAMPLES / "sandbox.toml", mappings)
    fields = {"message_id": "id", "subject": "subject", "correlation": "correlationId"}
    checked = 0
    for (party, direction, _), mapping in mappings.mappings.items():
        pair = sorted(mapping.path.parent.glob(f"{mapping.message_type}.*put.*")) + sorted(
            mapping.path.parent.glob(f"{mapping.message_type}.expected.*")
        )
        inputs = [p for p in pair if ".input." in p.name]
        expected = [p for p in pair if ".expected." in p.name]
        if party not in profiles or not inputs or not expected:
            continue
        party_format = mappings.party(party)
        if direction == "to-canonical":
            party_side = party_format.read(inputs[0].read_bytes())
            canonical = parse_xml(expected[0].read_bytes())
        else:
            party_side = party_format.read(expected[0].read_bytes())
            canonical = parse_xml(inputs[0].read_bytes())
        for attribute, envelope_field in fields.items():
            path: FieldPath = getattr(profiles[party], attribute)
            envelope = canonical.find(f"{{{CANONICAL_NS}}}envelope")
            assert envelope is not None
            want = envelope.findtext(f"{{{CANONICAL_NS}}}{envelope_field}")
            assert path.read(party_side) == want, (mapping.path, attribute)
        checked += 1
    assert checked >= 10


def test_a_party_without_a_profile_is_refused(
    mappings: MappingSet, pki: DevPki, tmp_path: Path
) -> None:
    (tmp_path / "sandbox.toml").write_text("[office]\n")
    with pytest.raises(ConfigurationError, match="be-vlg-wse"):
        Sandbox(mappings, pki, ["be-vlg-wse"], tmp_path)


def test_field_path_writes_a_missing_optional_element_last(mappings: MappingSet) -> None:
    party_format = mappings.party("be-vlg-wse")
    element = party_format.read(
        (EXAMPLES / "be-vlg-wse" / "admissibility.decided.json").read_bytes()
    )
    path = FieldPath.parse("kop/antwoordOp", party_format.namespaces)
    kop = element.find("kop")
    assert kop is not None
    kop.remove(kop[-1])  # antwoordOp, the last field of kop
    assert path.read(element) is None
    path.write(element, "11111111-2222-4333-8444-555555555555")
    party_format.schema.validate(element)
    assert path.read(element) == "11111111-2222-4333-8444-555555555555"


# ---------------------------------------------------------------------------------------------
# REST back offices


def post_rest(
    client: httpx.Client,
    sandbox: Sandbox,
    party: str,
    body: bytes,
    key: str,
    content_type: str = "application/json",
) -> httpx.Response:
    return client.post(
        sandbox.endpoints[party] + "/messages",
        content=body,
        headers={"Content-Type": content_type, "Idempotency-Key": key, "BelGov-Trace-Id": key},
    )


def test_rest_office_records_a_valid_message(quiet: Sandbox, hub_client: httpx.Client) -> None:
    body = golden("be-vlg-wse", "application.submitted").read_bytes()
    key = fresh_id()
    response = post_rest(hub_client, quiet, "be-vlg-wse", body, key)
    assert response.status_code == 202
    assert response.json() == {"received": "3f6c2a1e-8b4d-4c7a-9e21-5d0b7f3a9c14"}
    got = quiet.offices["be-vlg-wse"].wait_for(lambda r: r.idempotency_key == key)
    assert got.message_type == "application.submitted"
    assert got.subject == "SP-2026-004172"
    assert got.body == body
    assert got.trace_id == key
    assert not got.duplicate


def test_rest_office_answers_a_duplicate_like_the_first(
    quiet: Sandbox, hub_client: httpx.Client
) -> None:
    office = quiet.offices["be-platform"]
    body = golden("be-platform", "residence.decided").read_bytes()
    key = fresh_id()
    before = office.duplicates
    first = post_rest(hub_client, quiet, "be-platform", body, key)
    second = post_rest(hub_client, quiet, "be-platform", body, key)
    assert first.status_code == second.status_code == 202
    assert first.content == second.content
    assert office.duplicates == before + 1
    records = [r for r in office.received if r.idempotency_key == key]
    assert [r.duplicate for r in records] == [False, True]
    # The same key with another body is no duplicate: it is refused.
    other = post_rest(hub_client, quiet, "be-platform", body.replace(b"SP-2026", b"SP-2027"), key)
    assert other.status_code == 422
    assert office.duplicates == before + 1


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b'{"kop": {}}', "application/json", 422),
        (b'{"unknown": 1}', "application/json", 400),
        (b"<bericht/>", "application/xml", 415),
    ],
)
def test_rest_office_refuses_with_problem_details(
    quiet: Sandbox, hub_client: httpx.Client, body: bytes, content_type: str, status: int
) -> None:
    office = quiet.offices["be-vlg-wse"]
    count = len(office.received)
    response = post_rest(hub_client, quiet, "be-vlg-wse", body, fresh_id(), content_type)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert {"type", "title", "detail", "status"} <= problem.keys()
    assert problem["status"] == status
    assert len(office.received) == count


def test_fail_next_answers_the_injected_status_then_works_again(
    quiet: Sandbox, hub_client: httpx.Client
) -> None:
    office = quiet.offices["be-vlg-wse"]
    body = golden("be-vlg-wse", "status.updated").read_bytes()
    office.fail_next(2, 503)
    statuses = [
        post_rest(hub_client, quiet, "be-vlg-wse", body, fresh_id()).status_code for _ in range(3)
    ]
    assert statuses == [503, 503, 202]


def test_a_caller_without_a_certificate_of_the_ca_is_refused(
    quiet: Sandbox, pki: DevPki, tmp_path: Path
) -> None:
    other = init_dev_pki(tmp_path / "other", PARTIES[:1])
    body = golden("be-vlg-wse", "status.updated").read_bytes()
    no_certificate = ssl.create_default_context(cafile=str(pki.ca_cert))
    for verify in (client_ssl_context(other.hub), no_certificate):
        with (
            httpx.Client(verify=verify, timeout=TIMEOUT) as client,
            pytest.raises(httpx.TransportError),
        ):
            post_rest(client, quiet, "be-vlg-wse", body, fresh_id())


# ---------------------------------------------------------------------------------------------
# The SOAP back office


def post_soap(
    client: httpx.Client, sandbox: Sandbox, payload: etree._Element, key: str, action: str
) -> httpx.Response:
    return client.post(
        sandbox.endpoints["be-fed-ibz"],
        content=build_envelope(payload, {"MessageId": key, "TraceId": key}),
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{action}"'},
    )


def test_soap_office_acknowledges_as_the_wsdl_says(
    quiet: Sandbox, hub_client: httpx.Client
) -> None:
    payload = parse_xml(golden("be-fed-ibz", "workAuthorisation.decided").read_bytes())
    key = fresh_id()
    response = post_soap(hub_client, quiet, payload, key, f"{IBZ}/NotifierDecisionTravail")
    assert response.status_code == 200
    reply, _ = soap_payload(parse_xml(response.content))
    assert reply.tag == f"{{{IBZ}}}AccuseReception"
    assert reply.findtext(f"{{{IBZ}}}IdMessage") == "c4a8e2f6-1b3d-4c5e-9f7a-8b6d4e2c0a19"
    assert reply.findtext(f"{{{IBZ}}}DateReception")
    got = quiet.offices["be-fed-ibz"].wait_for(lambda r: r.idempotency_key == key)
    assert (got.message_type, got.subject, got.trace_id) == (
        "workAuthorisation.decided",
        "SP-2026-004172",
        key,
    )


def test_soap_duplicates_are_told_by_the_payload_not_the_envelope(
    quiet: Sandbox, hub_client: httpx.Client
) -> None:
    office = quiet.offices["be-fed-ibz"]
    payload = parse_xml(golden("be-fed-ibz", "status.updated").read_bytes())
    key = fresh_id()
    action = f"{IBZ}/NotifierStatut"
    before = office.duplicates
    first = post_soap(hub_client, quiet, payload, key, action)
    # Another attempt of the same delivery: same MessageId and payload, another envelope.
    again = hub_client.post(
        quiet.endpoints["be-fed-ibz"],
        content=build_envelope(payload, {"MessageId": key, "TraceId": fresh_id()}),
        headers={"Content-Type": "text/xml", "SOAPAction": f'"{action}"'},
    )
    assert first.status_code == again.status_code == 200
    assert first.content == again.content
    assert office.duplicates == before + 1
    # The same MessageId on another payload is refused.
    statut = payload.find(f"{{{IBZ}}}Statut")
    assert statut is not None
    statut.set("code", "CLOTURE")
    other = post_soap(hub_client, quiet, payload, key, action)
    assert other.status_code == 500
    assert b"reused" in other.content


@pytest.mark.parametrize("case", ["wrong action", "invalid payload", "no operation", "not soap"])
def test_soap_office_answers_client_faults(
    quiet: Sandbox, hub_client: httpx.Client, case: str
) -> None:
    payload = parse_xml(golden("be-fed-ibz", "status.updated").read_bytes())
    action = f"{IBZ}/NotifierStatut"
    if case == "wrong action":
        action = f"{IBZ}/NotifierRecevabilite"
    elif case == "invalid payload":
        statut = payload.find(f"{{{IBZ}}}Statut")
        assert statut is not None
        statut.set("code", "PERDU")
    elif case == "no operation":
        payload = parse_xml((EXAMPLES / "be-fed-ibz" / "residence.decided.xml").read_bytes())
        payload, _ = soap_payload(payload)
    if case == "not soap":  # (no envelope to sign)
        response = hub_client.post(
            quiet.endpoints["be-fed-ibz"],
            content=etree.tostring(payload),
            headers={"Content-Type": "text/xml", "SOAPAction": f'"{action}"'},
            auth=None,
        )
    else:
        response = post_soap(hub_client, quiet, payload, fresh_id(), action)
    assert response.status_code == 500
    fault, _ = soap_payload(parse_xml(response.content))
    assert fault.tag == f"{{{SOAP11_NS}}}Fault"
    assert fault.findtext("faultcode") == "soap:Client"
    assert fault.findtext("faultstring")


# ---------------------------------------------------------------------------------------------
# The responder


def test_flanders_answers_an_application_with_its_decisions_and_the_forwarding(
    responding: Sandbox,
    fake_hub: tuple[FakeHub, str],
    hub_client: httpx.Client,
    mappings: MappingSet,
) -> None:
    hub, _ = fake_hub
    office = responding.offices["be-vlg-wse"]
    body = golden("be-vlg-wse", "application.submitted").read_bytes()
    key = fresh_id()
    assert post_rest(hub_client, responding, "be-vlg-wse", body, key).status_code == 202
    # A duplicate delivery starts no second reply chain.
    assert post_rest(hub_client, responding, "be-vlg-wse", body, key).status_code == 202
    received = office.wait_for(lambda r: r.idempotency_key == key)
    calls = hub.wait(3)
    wse = mappings.party("be-vlg-wse")
    types = []
    for call in calls:
        assert call.path == "/v1/messages"
        assert call.caller == "be-vlg-wse"
        assert call.headers["content-type"] == "application/json"
        assert call.headers["belgov-trace-id"]
        element = wse.read(call.body)
        wse.schema.validate(element)
        types.append(wse.message_type(element))
        assert element.findtext("kop/dossiernummer") == received.subject
        assert element.findtext("kop/antwoordOp") == received.message_id
        assert element.findtext("kop/berichtId") == call.headers["idempotency-key"]
        assert element.findtext("kop/berichtId") != received.message_id
    assert types == ["admissibility.decided", "application.forwarded", "workAuthorisation.decided"]
    office.wait_for_sent(lambda s: s.message_type == types[-1])
    sent = office.sent
    assert [s.message_type for s in sent] == types
    assert all(s.status == 202 and s.error is None for s in sent)
    assert all(s.correlation_id == received.message_id for s in sent)
    assert len({s.message_id for s in sent}) == 3
    # Nothing more than the script: three messages, even after the duplicate (and a while).
    assert not wait_until(lambda: len(office.sent) > 3, timeout=0.5)
    assert len(office.sent) == 3
    assert len(hub.calls) == 3


def test_immigration_office_answers_a_work_decision_over_soap(
    responding: Sandbox,
    fake_hub: tuple[FakeHub, str],
    hub_client: httpx.Client,
    mappings: MappingSet,
    pki: DevPki,
) -> None:
    hub, _ = fake_hub
    payload = parse_xml(golden("be-fed-ibz", "workAuthorisation.decided").read_bytes())
    key = fresh_id()
    assert (
        post_soap(
            hub_client, responding, payload, key, f"{IBZ}/NotifierDecisionTravail"
        ).status_code
        == 200
    )
    [call] = hub.wait(1)
    assert call.path == "/soap/v1"
    assert call.caller == "be-fed-ibz"
    assert call.headers["soapaction"] == f'"{IBZ}/TransmettreDecisionSejour"'
    assert call.headers["content-type"].startswith("text/xml")
    # Signed by the office with its own certificate, as the hub requires.
    verified = wssec.verify_envelope(parse_xml(call.body), now=datetime.now(UTC))
    assert verified.signature.certificate == x509.load_pem_x509_certificate(
        pki.party("be-fed-ibz").cert.read_bytes()
    )
    decision = verified.payload
    mappings.party("be-fed-ibz").schema.validate(decision)
    assert decision.tag == f"{{{IBZ}}}DecisionSejour"
    assert decision.findtext(f"{{{IBZ}}}Entete/{{{IBZ}}}EnReponseA") == (
        "c4a8e2f6-1b3d-4c5e-9f7a-8b6d4e2c0a19"
    )
    assert decision.findtext(f"{{{IBZ}}}Entete/{{{IBZ}}}Dossier") == "SP-2026-004172"
    assert decision.findtext(f"{{{IBZ}}}Entete/{{{IBZ}}}IdTrace") == call.headers["belgov-trace-id"]
    sent = responding.offices["be-fed-ibz"].wait_for_sent()
    assert (sent.message_type, sent.status) == ("residence.decided", 200)


def test_the_portal_closes_the_case_after_the_residence_decision(
    responding: Sandbox,
    fake_hub: tuple[FakeHub, str],
    hub_client: httpx.Client,
    mappings: MappingSet,
) -> None:
    hub, _ = fake_hub
    body = golden("be-platform", "residence.decided").read_bytes()
    assert post_rest(hub_client, responding, "be-platform", body, fresh_id()).status_code == 202
    [call] = hub.wait(1)
    portal = mappings.party("be-platform")
    element = portal.read(call.body)
    portal.schema.validate(element)
    assert portal.message_type(element) == "status.updated"
    assert element.findtext("header/inReplyTo") == json.loads(body)["header"]["messageId"]


def test_no_hub_url_is_recorded_as_an_error(mappings: MappingSet, pki: DevPki) -> None:
    with Sandbox(mappings, pki, ["be-platform"], EXAMPLES) as sandbox:
        body = golden("be-platform", "residence.decided").read_bytes()
        # The client is closed before the server stops: an open keep-alive connection would hold
        # the server's graceful shutdown.
        signer = SigningAuth(SigningKey.from_files(pki.hub_cert, pki.hub_key))
        with httpx.Client(verify=client_ssl_context(pki.hub), timeout=TIMEOUT, auth=signer) as c:
            response = post_rest(c, sandbox, "be-platform", body, fresh_id())
        assert response.status_code == 202
        sent = sandbox.offices["be-platform"].wait_for_sent()
    assert sent.status is None
    assert sent.error is not None
    assert "hub" in sent.error


def test_wait_for_is_bounded(quiet: Sandbox) -> None:
    with pytest.raises(TimeoutError):
        quiet.offices["be-platform"].wait_for(lambda r: r.message_id == "never", timeout=0.2)


def test_soap_header_namespace_is_the_hubs() -> None:
    envelope = parse_xml(build_envelope(etree.Element("x"), {"MessageId": "m"}))
    _, header = soap_payload(envelope)
    assert header is not None
    assert header.findtext(f"{{{HUB_HEADER_NS}}}MessageId") == "m"
