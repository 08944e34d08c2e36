"""What the hub accepts and what it refuses, over real HTTPS with mutual TLS.

Every refusal: a problem (or SOAP Fault) with a stable code and the place of the fault, nothing
sealed as accepted, and the hub keeps serving.
"""

from __future__ import annotations

import base64
import json
import ssl
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import evidence
from gateway.certs import TlsFiles, init_dev_pki
from gateway.testing import RunningHub, capture_logs
from tests.conftest import EXAMPLES

JSON = {"Content-Type": "application/json"}
APPLICATION = EXAMPLES / "be-platform" / "application.submitted.json"


def fresh_application(**header: str) -> dict[str, Any]:
    body = json.loads(APPLICATION.read_bytes())
    body["header"]["messageId"] = str(uuid.uuid4())
    body["header"].update(header)
    return body


def post(
    hub: RunningHub, party: str, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    with hub.client(party) as client:
        return client.post("/v1/messages", content=body, headers=headers or JSON)


def accepted_ids(hub: RunningHub) -> set[str]:
    leaves = hub.hub.store.leaves()
    return {
        json.loads(leaf.record).get("messageId")
        for leaf in leaves
        if json.loads(leaf.record)["event"] == "exchange.accepted"
    }


def assert_still_serving(hub: RunningHub) -> None:
    with hub.client("operator") as client:
        assert client.get("/healthz").json() == {"status": "ok"}


def test_application_is_accepted_with_a_signed_receipt(quiet_hub: RunningHub) -> None:
    body = fresh_application()
    response = post(quiet_hub, "be-platform", json.dumps(body).encode())
    assert response.status_code == 202, response.text
    receipt = response.json()
    assert receipt["messageId"] == body["header"]["messageId"]
    assert receipt["status"] == "accepted"
    assert receipt["receivers"] == ["be-vlg-wse"]  # Ghent: Flanders is competent
    statement = evidence.receipt_statement(
        receipt["leafHash"], receipt["leafIndex"], receipt["time"], receipt["keyId"]
    )
    public_key = quiet_hub.hub.signer.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(base64.b64decode(receipt["signature"]), statement, ec.ECDSA(hashes.SHA256()))
    leaf = quiet_hub.hub.store.leaves(receipt["leafIndex"], receipt["leafIndex"] + 1)[0]
    assert leaf.leaf_hash.hex() == receipt["leafHash"]
    record = json.loads(leaf.record)
    assert record["receivers"] == ["be-vlg-wse"]
    assert record["outbound"][0]["schema"]["id"] == "be-vlg-wse"
    assert "personRef" in record
    insz = body["application"]["applicant"]["nationalRegisterNumber"]
    assert insz not in leaf.record.decode()


def test_status_is_visible_to_sender_and_receiver_only(quiet_hub: RunningHub) -> None:
    body = fresh_application()
    message_id = body["header"]["messageId"]
    assert post(quiet_hub, "be-platform", json.dumps(body).encode()).status_code == 202
    with quiet_hub.client("be-platform") as client:
        status = client.get(f"/v1/messages/{message_id}").json()
    assert status["deliveries"] == [
        {
            "receiver": "be-vlg-wse",
            "state": "pending",
            "attempts": 0,
            "deliveredAt": None,
            "nextAttemptAt": status["receivedAt"],  # due as soon as accepted
            "deadAt": None,
            "lastStatus": None,
            "lastError": None,
            "discardedAt": None,
            "reason": None,
        }
    ]
    with quiet_hub.client("be-vlg-wse") as client:
        assert client.get(f"/v1/messages/{message_id}").status_code == 200
    with quiet_hub.client("be-fed-ibz") as client:
        missing = client.get(f"/v1/messages/{message_id}")
    assert missing.status_code == 404
    assert missing.json()["code"] == "message.not-found"


def test_same_id_same_bytes_returns_the_original_receipt(quiet_hub: RunningHub) -> None:
    raw = json.dumps(fresh_application()).encode()
    first = post(quiet_hub, "be-platform", raw)
    again = post(quiet_hub, "be-platform", raw)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["status"] == "duplicate"
    assert again.json()["leafIndex"] == first.json()["leafIndex"]


def test_same_id_other_bytes_is_a_conflict(quiet_hub: RunningHub) -> None:
    body = fresh_application()
    assert post(quiet_hub, "be-platform", json.dumps(body).encode()).status_code == 202
    body["header"]["legalBasis"] = "another legal basis"
    conflict = post(quiet_hub, "be-platform", json.dumps(body).encode())
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "message.duplicate-id"
    assert conflict.json()["path"] == "/header/messageId"  # where the portal wrote the id


def _problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"urn:guichet:problem:{problem['code']}"
    assert problem["traceId"] == response.headers["BelGov-Trace-Id"]
    return problem


def _invalid_insz() -> bytes:
    body = json.loads(
        (EXAMPLES / "be-platform" / "application.submitted.invalid-insz.json").read_bytes()
    )
    body["header"]["messageId"] = str(uuid.uuid4())
    return json.dumps(body).encode()


def _bad_kbo() -> bytes:
    body = fresh_application()
    number = body["application"]["employer"]["companyNumber"]
    body["application"]["employer"]["companyNumber"] = (
        number[:8] + f"{(int(number[8:]) + 1) % 100:02d}"
    )
    return json.dumps(body).encode()


def _invalid_schema() -> bytes:
    body = json.loads(
        (EXAMPLES / "be-platform" / "application.submitted.invalid-schema.json").read_bytes()
    )
    body["header"]["messageId"] = str(uuid.uuid4())
    return json.dumps(body).encode()


def _unknown_member() -> bytes:
    body = fresh_application()
    body["application"]["applicant"]["favouriteColour"] = "blue"
    return json.dumps(body).encode()


def _contract_end_before_start() -> bytes:
    body = fresh_application()
    job = body["application"]["position"]
    start_key = next(k for k in job if "start" in k.lower())
    end_key = next(k for k in job if "end" in k.lower())
    job[end_key] = "2020-01-01"
    assert job[start_key] > "2020-01-01"
    return json.dumps(body).encode()


def _type_not_allowed() -> bytes:
    # Valid for the portal's schema, but the portal may not send residence decisions.
    body = json.loads(
        (
            Path(__file__).resolve().parents[2]
            / "mappings"
            / "be-platform"
            / "from-canonical"
            / "residence.decided.expected.json"
        ).read_bytes()
    )
    body["header"]["messageId"] = str(uuid.uuid4())
    return json.dumps(body).encode()


def _wrong_destination() -> bytes:
    return json.dumps(fresh_application(recipient="be-fed-ibz")).encode()


def _control_character() -> bytes:
    body = fresh_application()
    body["application"]["applicant"]["birth"]["place"] = "Chen\u0000nai"
    return json.dumps(body).encode()


def _lone_surrogate() -> bytes:
    return json.dumps(fresh_application()).replace("Chennai", "Chen\\ud800nai").encode()


REFUSALS = [
    ("lone surrogate in a string", _lone_surrogate, JSON, 400, "json.malformed", None),
    ("control character in a string", _control_character, JSON, 400, "json.malformed", None),
    ("malformed JSON", lambda: b'{"header": ', JSON, 400, "json.malformed", None),
    (
        "duplicate key",
        lambda: b'{"header": {}, "header": {}}',
        JSON,
        400,
        "json.duplicate-key",
        None,
    ),
    (
        "XML to a JSON party",
        lambda: b"<a/>",
        {"Content-Type": "application/xml"},
        415,
        "request.unsupported-media-type",
        None,
    ),
    ("invalid against the XSD", _invalid_schema, JSON, 422, "schema.invalid", "/application"),
    (
        "member not in the XSD",
        _unknown_member,
        JSON,
        400,
        "json.unknown-member",
        "/application/applicant/favouriteColour",
    ),
    # Domain faults are found in the canonical message and named where the sender wrote them.
    (
        "bad INSZ check digit",
        _invalid_insz,
        JSON,
        422,
        "domain.insz-check-digit",
        "/application/applicant/nationalRegisterNumber",
    ),
    (
        "bad KBO check digit",
        _bad_kbo,
        JSON,
        422,
        "domain.kbo-check-digit",
        "/application/employer/companyNumber",
    ),
    (
        "dates in the wrong order",
        _contract_end_before_start,
        JSON,
        422,
        "domain.date-order",
        "/application/position/endDate",
    ),
    ("type the party may not send", _type_not_allowed, JSON, 403, "authz.type-not-allowed", None),
    (
        "destination not competent",
        _wrong_destination,
        JSON,
        422,
        "routing.destination-mismatch",
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "headers", "status", "code", "where"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
def test_bad_input_is_refused_clearly_and_leaves_no_trace(
    quiet_hub: RunningHub,
    name: str,
    make: Any,
    headers: dict[str, str],
    status: int,
    code: str,
    where: str | None,
) -> None:
    before = accepted_ids(quiet_hub)
    response = post(quiet_hub, "be-platform", make(), headers)
    assert response.status_code == status, response.text
    problem = _problem(response)
    assert problem["code"] == code
    if where is not None:
        assert where in problem["path"]
    assert accepted_ids(quiet_hub) == before
    last = json.loads(quiet_hub.hub.store.leaves()[-1].record)
    assert last["event"] == "exchange.rejected"
    assert last["problem"]["code"] == code
    assert_still_serving(quiet_hub)


def test_destination_mismatch_names_the_competent_region(quiet_hub: RunningHub) -> None:
    problem = post(quiet_hub, "be-platform", _wrong_destination()).json()
    assert problem["competent"] == "be-vlg-wse"


def test_role_certificate_may_not_send(quiet_hub: RunningHub) -> None:
    files = quiet_hub.pki.role("operator")
    from gateway.service.tls import client_ssl_context

    with httpx.Client(base_url=quiet_hub.url, verify=client_ssl_context(files)) as client:
        response = client.post(
            "/v1/messages", content=json.dumps(fresh_application()), headers=JSON
        )
        assert response.status_code == 403
        assert response.json()["code"] == "authz.role-required"
        assert client.get("/healthz").status_code == 200


def test_no_client_certificate_no_way_in(quiet_hub: RunningHub) -> None:
    context = ssl.create_default_context(cafile=str(quiet_hub.pki.hub.ca))
    with (
        httpx.Client(base_url=quiet_hub.url, verify=context) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.post("/v1/messages", content=b"{}", headers=JSON)
    assert_still_serving(quiet_hub)


def test_foreign_client_certificate_no_way_in(quiet_hub: RunningHub, tmp_path: Path) -> None:
    foreign = init_dev_pki(tmp_path, quiet_hub.hub.parties.identities())
    files = TlsFiles(
        foreign.party("be-platform").cert, foreign.party("be-platform").key, quiet_hub.pki.hub.ca
    )
    from gateway.service.tls import client_ssl_context

    with (
        httpx.Client(base_url=quiet_hub.url, verify=client_ssl_context(files)) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.post("/v1/messages", content=b"{}", headers=JSON)
    assert_still_serving(quiet_hub)


def test_body_over_the_limit_is_refused(quiet_hub: RunningHub) -> None:
    response = post(quiet_hub, "be-platform", b" " * (quiet_hub.hub.limits.max_bytes + 1))
    assert response.status_code == 413
    assert _problem(response)["code"] == "request.too-large"


def test_trace_id_is_honoured_returned_and_logged_without_personal_data(
    quiet_hub: RunningHub,
) -> None:
    body = fresh_application()
    trace = "demo-trace-0001"
    with capture_logs() as logs:
        response = post(
            quiet_hub, "be-platform", json.dumps(body).encode(), {**JSON, "BelGov-Trace-Id": trace}
        )
        refused = post(
            quiet_hub,
            "be-platform",
            _invalid_insz(),
            {**JSON, "BelGov-Trace-Id": "trace-of-refusal"},
        )
    assert response.status_code == 202
    assert response.headers["BelGov-Trace-Id"] == trace
    assert refused.status_code == 422
    events = logs.events()
    accepted = [e for e in events if e["event"] == "message.accepted"]
    assert accepted and accepted[0]["trace_id"] == trace
    assert any(
        e["event"] == "message.rejected" and e["trace_id"] == "trace-of-refusal" for e in events
    )
    applicant = body["application"]["applicant"]
    refused = json.loads(_invalid_insz())["application"]["applicant"]
    for secret in (
        applicant["nationalRegisterNumber"],
        applicant["name"]["last"],
        applicant["identity"]["passportNumber"],
        refused["nationalRegisterNumber"],  # the refused message's own, invalid, number
    ):
        assert secret not in logs.text


def test_trace_id_is_made_when_absent(quiet_hub: RunningHub) -> None:
    response = post(quiet_hub, "be-platform", json.dumps(fresh_application()).encode())
    assert uuid.UUID(response.headers["BelGov-Trace-Id"])


def test_metrics_and_readiness(quiet_hub: RunningHub) -> None:
    with quiet_hub.client("be-platform") as client:
        # Other parties' traffic, and the hub's state, are not a party's to read.
        assert client.get("/readyz").status_code == 403
        assert client.get("/metrics").status_code == 403
    with quiet_hub.client("operator") as operator:
        assert operator.get("/readyz").json()["status"] == "ready"
        metrics = operator.get("/metrics").text
    assert (
        'guichet_messages_total{outcome="accepted",sender="be-platform",type="application.submitted"}'
        in metrics
    )
    # Deliveries are paused in this hub: every accepted message waits in the outbox.
    depth = quiet_hub.hub.store.outbox_depth()
    assert depth > 0
    assert f"guichet_outbox_depth {float(depth)}" in metrics


def test_a_body_that_never_arrives_is_given_up(quiet_hub: RunningHub) -> None:
    import socket
    import time

    from gateway.service.tls import client_ssl_context

    context = client_ssl_context(quiet_hub.pki.party("be-platform"))
    with (
        socket.create_connection(("127.0.0.1", quiet_hub.server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        answer = b""
        while b"request.timeout" not in answer and time.monotonic() - started < 8:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert b"request.timeout" in answer
    assert time.monotonic() - started < 8
    assert_still_serving(quiet_hub)
