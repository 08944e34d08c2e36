"""The hub against its own OpenAPI description: schemathesis over real mutual TLS.

The description is fetched from the running hub (``GET /openapi.json``), and every operation is
called with generated cases by the identity the route needs (``gateway.authz.ROUTES``): a party
for sending, status and the WSDL (its POSTs signed as a party signs them, so that the cases reach
past the signature check into the parsers), the operator for the outbox and health, the auditor
for the log. Each response must conform: no undocumented server error, a documented status and
content type, a body of the documented schema. Each operation is also called once by an identity
without its permission, whose refusal must be documented too.

Bounded: a few dozen derandomized examples per operation, no example database.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway import authz, jws, wssec
from gateway.certs import TlsFiles
from gateway.errors import PROBLEMS, GatewayError
from gateway.service import openapi as docs
from gateway.signing import SigningKey
from gateway.testing import RunningHub
from tests.conftest import EXAMPLES as EXAMPLE_DIR
from tests.conftest import post_applications

pytestmark = pytest.mark.slow

PARTY = "be-platform"  # REST
SOAP_PARTY = "be-wal-spw"  # SOAP 1.1 (the WSDL is a SOAP party's)
# Who calls each permission's routes, and someone who may not.
RIGHT = {
    "send": PARTY,
    "status": PARTY,
    "wsdl": PARTY,
    "operate": "operator",
    "audit": "auditor",
    "describe": "auditor",
}
WRONG = {
    "send": "operator",
    "status": "auditor",
    "wsdl": "operator",
    "operate": PARTY,
    "audit": "operator",
}
EXAMPLES = 50
# What a response must be: no server error (but SOAP's Faults, below), of a documented status
# and content type, with documented headers and a body of the documented schema. (Not
# schemathesis's "positive data accepted": the log's and the outbox's answers depend on the log
# and the outbox, e.g. a tree size beyond the log is 422, which no schema of a query can say.)
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


class _Signing(requests.auth.AuthBase):
    """What gateway.signatures.SigningAuth does for httpx, for requests: a SOAP body gets a
    WS-Security header (when it is an envelope at all), any other POST body a detached JWS."""

    def __init__(self, signer: SigningKey) -> None:
        self.signer = signer

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if request.method != "POST":
            return request
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        if request.path_url.startswith("/soap/"):
            try:
                signed = wssec.sign_envelope(body, self.signer)
            except (GatewayError, ValueError):
                return request  # no envelope to sign: refused for what it is
            request.body = signed
            request.headers["Content-Length"] = str(len(signed))
            return request
        request.headers[jws.HEADER] = jws.sign_detached(body, self.signer)
        return request


def _who(permission: str, path: str, table: dict[str, str]) -> str:
    who = table[permission]
    return SOAP_PARTY if who == PARTY and path.startswith("/soap/") else who


_FAULT_CODE = re.compile(rb"<h:code>([^<]+)</h:code>")


def _validate(case: Any, response: Any, path: str) -> None:
    """The response as described; on SOAP, a 5xx only as a Fault the caller caused (SOAP 1.1
    carries every Fault with 500): one the hub caused (soap:Server) is a server error."""
    soap = path.startswith("/soap/")
    case.validate_response(response, checks=CHECKS if soap else [not_a_server_error, *CHECKS])
    if soap and response.status_code >= 500:
        found = _FAULT_CODE.search(response.content)
        assert found, response.text
        code = found[1].decode()
        assert code in PROBLEMS and PROBLEMS[code].soap_fault != "Server", response.text


def _files(running: RunningHub, who: str) -> TlsFiles:
    return running.pki.role(who) if who in ("operator", "auditor") else running.pki.party(who)


def _session(running: RunningHub, who: str) -> requests.Session:
    files = _files(running, who)
    session = requests.Session()
    if who not in ("operator", "auditor"):
        session.auth = _Signing(SigningKey.from_files(files.cert, files.key))
    return session


def _call(running: RunningHub, sessions: dict[str, requests.Session], who: str, case: Any) -> Any:
    """The case sent over mutual TLS as ``who`` (schemathesis sets verify and cert itself)."""
    files = _files(running, who)
    return case.call(
        base_url=running.url,
        session=sessions[who],
        verify=str(files.ca),
        cert=(str(files.cert), str(files.key)),
        timeout=10,
    )


@pytest.fixture(scope="module")
def seeded(quiet_hub: RunningHub) -> dict[str, Any]:
    """One accepted message (its deliveries pending: the quiet hub delivers nothing) and a signed
    checkpoint, so that the status, outbox and log routes have something to answer with."""
    (sent,) = post_applications(quiet_hub, 1)
    quiet_hub.hub.checkpoint()
    return sent


@pytest.fixture(scope="module")
def described(quiet_hub: RunningHub, seeded: dict[str, Any]) -> dict[str, Any]:
    with quiet_hub.client("auditor") as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200, response.text
    raw: dict[str, Any] = response.json()
    return raw


@pytest.fixture(scope="module")
def schema(described: dict[str, Any]) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_dict(described)


@pytest.fixture(scope="module")
def sessions(quiet_hub: RunningHub) -> Iterator[dict[str, requests.Session]]:
    everyone = {*RIGHT.values(), *WRONG.values(), SOAP_PARTY}
    opened = {who: _session(quiet_hub, who) for who in everyone}
    yield opened
    for session in opened.values():
        session.close()


def _operations(described: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, operations in described["paths"].items()
        for method in operations
    ]


def test_every_served_route_is_described_with_its_errors(described: dict[str, Any]) -> None:
    """Every route of the table but the description itself is described, each with a success,
    the guard's refusals, and an internal error; REST errors as problems, SOAP ones as Faults."""
    operations = set(_operations(described))
    assert operations == set(authz.ROUTES) - {("GET", "/openapi.json")}
    for method, path in operations:
        responses = described["paths"][path][method.lower()]["responses"]
        assert any(code.startswith("2") for code in responses), (method, path)
        errors = {int(code) for code in responses if code[0] in "45"} - {503}
        if path.startswith("/soap/"):
            assert errors == {400, 500}, (method, path)
            continue
        assert {401, 403, 500} <= errors, (method, path)
        for code in errors:
            assert docs.PROBLEM_JSON in responses[str(code)]["content"], (method, path, code)
    send = described["paths"]["/v1/messages"]["post"]["responses"]
    assert {int(c) for c in send} == {
        200,
        202,
        *{PROBLEMS[c].status for c in PROBLEMS if c.split(".")[0] in ("json", "request")},
        401,
        403,
        409,
        422,
        500,
        503,
    }
    assert described["paths"]["/readyz"]["get"]["responses"]["503"]["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/NotReady"}}
    }


def test_the_description_names_no_error_code_the_table_lacks() -> None:
    with pytest.raises(ValueError, match="no-such"):
        docs.error_statuses("log.no-such")
    assert docs.error_statuses("request.rate-limited")[429] == ["request.rate-limited"]
    # SOAP: every fault is 500 in SOAP 1.1; a Sender fault is 400 in SOAP 1.2.
    assert set(docs.error_statuses("schema.invalid", soap=True)) == {400, 500}


def _fuzz(
    running: RunningHub,
    schema: schemathesis.schemas.BaseSchema,
    sessions: dict[str, requests.Session],
    method: str,
    path: str,
) -> None:
    operation = schema[path][method]
    who = _who(authz.ROUTES[(method, path)], path, RIGHT)

    @FUZZ
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = _call(running, sessions, who, case)
        _validate(case, response, path)

    run()


def _route_ids(routes: list[tuple[str, str]]) -> list[str]:
    return [f"{m} {p}" for m, p in routes]


FUZZED = sorted(set(authz.ROUTES) - {("GET", "/openapi.json")})


@pytest.mark.parametrize(("method", "path"), FUZZED, ids=_route_ids(FUZZED))
def test_each_operation_answers_as_described(
    quiet_hub: RunningHub,
    schema: schemathesis.schemas.BaseSchema,
    sessions: dict[str, requests.Session],
    method: str,
    path: str,
) -> None:
    _fuzz(quiet_hub, schema, sessions, method, path)


@pytest.mark.parametrize(("method", "path"), FUZZED, ids=_route_ids(FUZZED))
def test_a_caller_without_the_permission_is_refused_as_described(
    quiet_hub: RunningHub,
    schema: schemathesis.schemas.BaseSchema,
    sessions: dict[str, requests.Session],
    method: str,
    path: str,
) -> None:
    operation = schema[path][method]
    who = _who(authz.ROUTES[(method, path)], path, WRONG)

    @settings(FUZZ, max_examples=1)
    @given(case=operation.as_strategy(), _=st.just(None))
    def run(case: Any, _: None) -> None:
        response = _call(quiet_hub, sessions, who, case)
        _validate(case, response, path)
        soap = path.startswith("/soap/")
        assert response.status_code == (500 if soap else 403), response.text
        assert b"authz.role-required" in response.content

    run()


def test_the_successes_answer_as_described(
    quiet_hub: RunningHub,
    schema: schemathesis.schemas.BaseSchema,
    sessions: dict[str, requests.Session],
    seeded: dict[str, Any],
) -> None:
    """The bodies of the generated cases are mostly refused; these are not: each success (and
    the duplicate's 200, an outbox action on a delivery that is not dead) conforms too."""
    body = json.loads((EXAMPLE_DIR / PARTY / "application.submitted.json").read_bytes())
    body["header"]["messageId"] = str(uuid.uuid4())
    calls: list[tuple[str, str, str, dict[str, Any], int]] = [
        ("POST", "/v1/messages", PARTY, {"body": body, "media_type": "application/json"}, 202),
        ("POST", "/v1/messages", PARTY, {"body": body, "media_type": "application/json"}, 200),
        (
            "GET",
            "/v1/messages/{message_id}",
            PARTY,
            {"path_parameters": {"message_id": seeded["header"]["messageId"]}},
            200,
        ),
        ("GET", "/soap/v1", SOAP_PARTY, {"query": {"wsdl": ""}}, 200),
        ("GET", "/v1/outbox", "operator", {"query": {"limit": 5}}, 200),
        ("GET", "/v1/log/checkpoint", "auditor", {}, 200),
        ("GET", "/v1/log/proof/inclusion", "auditor", {"query": {"index": "0"}}, 200),
        ("GET", "/v1/log/proof/consistency", "auditor", {"query": {"first": "1"}}, 200),
        ("GET", "/v1/log/records/{index}", "auditor", {"path_parameters": {"index": "0"}}, 200),
    ]
    for method, path, who, given_, status in calls:
        case = schema[path][method].Case(**given_)
        response = _call(quiet_hub, sessions, who, case)
        assert response.status_code == status, (method, path, response.text)
        _validate(case, response, path)
    outbox = _call(
        quiet_hub, sessions, "operator", schema["/v1/outbox"]["GET"].Case(query={"limit": 1})
    ).json()
    (pending,) = outbox["deliveries"]
    for action in ("retry", "discard"):
        path = f"/v1/outbox/{{delivery_id}}/{action}"
        case = schema[path]["POST"].Case(
            path_parameters={"delivery_id": str(pending["id"])},
            body={"reason": "fuzz"},
            media_type="application/json",
        )
        response = _call(quiet_hub, sessions, "operator", case)
        assert response.status_code == 409, response.text  # not a dead letter
        _validate(case, response, path)
