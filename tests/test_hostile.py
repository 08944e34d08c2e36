"""The hostile corpus (``tests/corpus/hostile/``): bodies built to hurt a parser or to slip past
it, each posted to a running hub over mutual TLS as the party ``expected.toml`` names.

Each must be refused with its problem code and HTTP status; nothing is sealed as accepted, the
evidence log still verifies and the hub keeps serving. A case is a file beside ``expected.toml``
or is generated at run time (``kind``: one of :data:`GENERATORS`), so that big bodies stay out of
git and later cases (signature wrapping, replays) can be built from keys and certificates.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from gateway import jws, wssec
from gateway.audit import verify_log
from gateway.errors import PROBLEMS, GatewayError
from gateway.namespaces import HUB_NS
from gateway.service.tls import client_ssl_context
from gateway.signing import SigningKey
from gateway.testing import RunningHub
from gateway.xml import parse_xml
from tests.gateway.test_wssec import HOSTILE_CODES

HOME = Path(__file__).resolve().parents[1]
HOSTILE = Path(__file__).parent / "corpus" / "hostile"
EXPECTED = HOSTILE / "expected.toml"
_KEYS = {"party", "endpoint", "content_type", "status", "code", "signature", "soap_action", "why"}
_ENDPOINTS = {"rest": "/v1/messages", "soap11": "/soap/v1", "soap12": "/soap/v1"}


@dataclass(frozen=True)
class Case:
    name: str
    party: str
    endpoint: str  # rest | soap11 | soap12
    content_type: str
    status: int
    code: str
    why: str
    signature: str = "party"  # party | none | <party>[:<variant>]: who signs (see sign)
    soap_action: str | None = None
    kind: str | None = None  # None: the file `name`; else a generator of GENERATORS
    params: Mapping[str, Any] = field(default_factory=dict)  # the generator's keys


def load_cases(expected: Path = EXPECTED) -> list[Case]:
    cases = []
    for name, entry in tomllib.loads(expected.read_text()).items():
        known = {k: v for k, v in entry.items() if k in _KEYS}
        params = {k: v for k, v in entry.items() if k not in _KEYS and k != "kind"}
        cases.append(Case(name=name, kind=entry.get("kind"), params=params, **known))
    return cases


CASES = load_cases()


# -- generated bodies -----------------------------------------------------------------------------


def _repeat(case: Case, hub: RunningHub) -> bytes:
    p = case.params
    base = (HOME / p["base"]).read_text()
    at = p["at"]
    assert at in base, f"{case.name}: {at!r} is not in {p['base']}"
    grown = at + p.get("before", "") + p["insert"] * p["times"] + p.get("after", "")
    return base.replace(at, grown, 1).encode()


def _nested(case: Case, hub: RunningHub) -> bytes:
    p = case.params
    depth = p["depth"]
    text = p["before"] + p["open"] * depth + p["inner"] + p["close"] * depth + p["after"]
    return text.encode()


def _oversized(case: Case, hub: RunningHub) -> bytes:
    p = case.params
    base = (HOME / p["base"]).read_bytes()
    padding = hub.hub.limits.max_bytes + 1 - len(base)
    return base + p["insert"].encode() * (padding // len(p["insert"].encode()) + 1)


# -- signed bodies: forged, stale, wrapped, replayed -------------------------------------------


@dataclass(frozen=True)
class Sending:
    """What is POSTed: the body, headers beside the Content-Type, whether it is signed already
    (else ``sign`` signs it as the case says), and what is sent first (a replay's original)."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    signed: bool = False
    before: tuple[Sending, ...] = ()


def signer_of(hub: RunningHub, who: str) -> SigningKey:
    """A party's signing key, or one of the dev PKI's test certificates (``party:variant``)."""
    party, _, variant = who.partition(":")
    files = hub.pki.variant(party, variant) if variant else hub.pki.party(party)
    return SigningKey.from_files(files.cert, files.key)


def _fresh(case: Case) -> bytes:
    """The case's ``base`` example with a new message id (JSON header, or the SOAP payload's
    ``id_path``), so that no two runs collide on an id."""
    base = (HOME / case.params["base"]).read_bytes()
    new_id = str(uuid.uuid4())
    if case.params["base"].endswith(".json"):
        data = json.loads(base)
        data["header"]["messageId"] = new_id
        return json.dumps(data).encode()
    root = parse_xml(base)
    found = root.xpath(case.params["id_path"], namespaces=dict(case.params.get("ns", {})))
    assert found, f"{case.name}: no {case.params['id_path']} in {case.params['base']}"
    found[0].text = new_id
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _signed(
    case: Case, hub: RunningHub, body: bytes, *, by: str | None = None, age_s: int = 0
) -> Sending:
    """``body`` signed by ``by`` (default: the sending party), ``age_s`` seconds ago."""
    signer = signer_of(hub, by or case.party)
    now = datetime.now(UTC) - timedelta(seconds=age_s)
    if case.endpoint == "rest":
        return Sending(body, {jws.HEADER: jws.sign_detached(body, signer, now=now)}, signed=True)
    return Sending(wssec.sign_envelope(body, signer, now=now), signed=True)


def _fresh_body(case: Case, hub: RunningHub) -> bytes:
    """The ``base`` example with a new message id, signed as the case's ``signature`` says."""
    return _fresh(case)


def _signed_by(case: Case, hub: RunningHub) -> Sending:
    """Signed by ``by``: another party's certificate, or a revoked or expired one."""
    return _signed(case, hub, _fresh(case), by=case.params["by"])


def _stale(case: Case, hub: RunningHub) -> Sending:
    """Signed ``age_s`` seconds ago: a JWS ``iat``, a WS-Security Timestamp, out of date."""
    return _signed(case, hub, _fresh(case), age_s=case.params["age_s"])


def _tampered(case: Case, hub: RunningHub) -> Sending:
    """Signed, then ``replace`` changed in the body (once): the signature no longer covers it."""
    signed = _signed(case, hub, _fresh(case))
    old, new = case.params["replace"]
    assert old.encode() in signed.body, f"{case.name}: {old!r} is not in the body"
    return Sending(signed.body.replace(old.encode(), new.encode(), 1), signed.headers, True)


def _jws_header(case: Case, hub: RunningHub) -> Sending:
    """A detached JWS whose protected header is ``header`` (+ the party's chain), with a made-up
    signature: refused for what the header says before any key is used."""
    body = _fresh(case)
    files = hub.pki.party(case.party)
    chain = [
        base64.b64encode(c.public_bytes(Encoding.DER)).decode()
        for c in x509.load_pem_x509_certificates(files.cert.read_bytes())
    ]
    header = {**case.params["header"], "x5c": chain, "iat": int(time.time())}
    protected = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return Sending(body, {jws.HEADER: f"{protected}..AAAA"}, signed=True)


def _wsse_attack(case: Case, hub: RunningHub) -> Sending:
    """A WS-Security envelope the party signed, then attacked (``attack``: one of the wrapping,
    tampering and algorithm attacks of tests/gateway/test_wssec.py)."""
    signed = _signed(case, hub, _fresh(case))
    attack, _code = HOSTILE_CODES[case.params["attack"]]
    return Sending(attack(signed.body), signed=True)


def _replay(case: Case, hub: RunningHub) -> Sending:
    """A signed message sent twice, byte for byte: the second time is the replay."""
    signed = _signed(case, hub, _fresh(case))
    return Sending(signed.body, signed.headers, True, before=(signed,))


def _id_reused(case: Case, hub: RunningHub) -> Sending:
    """A message accepted, then another one (signed anew) with the same message id."""
    first = _fresh(case)
    data = json.loads(first)
    old, new = case.params["replace"]
    other = json.dumps(data).replace(old, new, 1).encode()
    assert other != json.dumps(data).encode(), f"{case.name}: {old!r} is not in the body"
    return Sending(other, before=(Sending(first),))


# kind → how its body is made.
GENERATORS: dict[str, Callable[[Case, RunningHub], bytes | Sending]] = {
    "repeat": _repeat,
    "nested": _nested,
    "oversized": _oversized,
    "fresh": _fresh_body,
    "signed-by": _signed_by,
    "stale": _stale,
    "tampered": _tampered,
    "jws-header": _jws_header,
    "wsse-attack": _wsse_attack,
    "replay": _replay,
    "id-reused": _id_reused,
}


def body_of(case: Case, hub: RunningHub) -> Sending:
    if case.kind is None:
        return Sending((HOSTILE / case.name).read_bytes())
    made = GENERATORS[case.kind](case, hub)
    return made if isinstance(made, Sending) else Sending(made)


# -- sending --------------------------------------------------------------------------------------


def _headers(case: Case) -> dict[str, str]:
    headers = {"Content-Type": case.content_type}
    if case.soap_action is not None:
        if case.endpoint == "soap11":
            headers["SOAPAction"] = f'"{case.soap_action}"'
        else:
            headers["Content-Type"] += f'; action="{case.soap_action}"'
    return headers


def sign(case: Case, hub: RunningHub, body: bytes) -> tuple[bytes, dict[str, str]]:
    """The bytes and extra headers of a body signed as ``case.signature`` says: by the sending
    party (``party``, the default), by no one (``none``), or by another certificate
    (``<party>`` or ``<party>:<variant>`` of the dev PKI). A REST body gets a detached JWS over
    whatever bytes it is; a SOAP body gets WS-Security when it is an envelope that can carry
    it (a broken one is refused for its shape before any signature is looked for)."""
    if case.signature == "none":
        return body, {}
    signer = signer_of(hub, case.party if case.signature == "party" else case.signature)
    if case.endpoint == "rest":
        return body, {jws.HEADER: jws.sign_detached(body, signer)}
    try:
        return wssec.sign_envelope(body, signer), {}
    except (GatewayError, ValueError):
        return body, {}


def post_case(
    client: httpx.Client, case: Case, hub: RunningHub, sending: Sending
) -> httpx.Response:
    """POST a case as its party would: the one way every case is sent."""
    headers = _headers(case)
    if sending.signed:
        content, extra = sending.body, sending.headers
    else:
        content, extra = sign(case, hub, sending.body)
    return client.post(_ENDPOINTS[case.endpoint], content=content, headers={**headers, **extra})


def problem_code(case: Case, response: httpx.Response) -> str:
    """The problem's code: of the problem+json (REST), of the Fault's h:problem (SOAP)."""
    if case.endpoint == "rest":
        assert response.headers["content-type"] == "application/problem+json", response.text
        return str(response.json().get("code", ""))
    fault = parse_xml(response.content)
    return str(fault.xpath("string(//h:problem/h:code)", namespaces={"h": HUB_NS}))


def accepted(hub: RunningHub) -> int:
    return sum(
        json.loads(leaf.record)["event"] == "exchange.accepted" for leaf in hub.hub.store.leaves()
    )


def assert_log_verifies(hub: RunningHub) -> None:
    store = hub.hub.store
    report = verify_log(store.leaves(), store.checkpoints(), hub.hub.signer.certificate)
    assert report.ok, report.problems


# -- the corpus itself ----------------------------------------------------------------------------


def test_every_file_is_a_case_and_every_case_has_its_body() -> None:
    files = {p.name for p in HOSTILE.iterdir() if p.name != EXPECTED.name}
    from_files = {case.name for case in CASES if case.kind is None}
    generated = {case.name for case in CASES if case.kind is not None}
    assert files == from_files, "files without an entry, or entries without a file"
    assert not files & generated, "a generated case has a file of its name"
    for path in HOSTILE.iterdir():
        assert path.stat().st_size < 50_000, f"{path.name}: generate it (kind) instead"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_case_is_well_formed(case: Case) -> None:
    from gateway.config import load_parties

    parties = load_parties(HOME / "parties.toml")
    assert case.party in parties.parties, case.party
    assert parties.parties[case.party].protocol == case.endpoint, "the party's own endpoint"
    assert case.code in PROBLEMS, f"unknown code {case.code}"
    assert case.kind is None or case.kind in GENERATORS, f"no generator {case.kind}"
    assert case.why
    # The status is the one the code's problem has, as the endpoint carries it.
    problem = PROBLEMS[case.code]
    if case.endpoint == "rest":
        assert case.status == problem.status
    elif case.endpoint == "soap11":
        assert case.status == 500  # SOAP 1.1 carries every fault with 500
    else:
        assert case.status == (400 if problem.soap_fault == "Client" else 500)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile_bodies_are_refused_and_leave_no_trace(quiet_hub: RunningHub, case: Case) -> None:
    sending = body_of(case, quiet_hub)
    with quiet_hub.client(case.party, sign=False) as client:
        for first in sending.before:  # what the attack replays, sent as it was the first time
            answer = post_case(client, case, quiet_hub, first)
            assert answer.status_code < 500 or case.endpoint == "soap11", answer.text[:500]
        before = accepted(quiet_hub)
        started = time.monotonic()
        response = post_case(client, case, quiet_hub, sending)
        assert (response.status_code, problem_code(case, response)) == (case.status, case.code), (
            f"{case.why}: {response.text[:500]}"
        )
    with quiet_hub.client("operator") as client:
        assert client.get("/healthz").json() == {"status": "ok"}
    assert time.monotonic() - started < 10, "refused, but slowly"
    assert accepted(quiet_hub) == before
    assert_log_verifies(quiet_hub)


def _answered(tls: ssl.SSLSocket) -> bytes:
    """What the server has sent so far, without waiting (TLS records that carry no data, such
    as session tickets, are read and give nothing)."""
    tls.setblocking(False)
    try:
        return tls.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return b""
    finally:
        tls.setblocking(True)


def test_a_chunked_body_growing_past_the_limit_is_refused_while_it_streams(
    quiet_hub: RunningHub,
) -> None:
    """A body without Content-Length (chunked) that would be 50 MB: the hub answers 413 once it
    has read past max_body_bytes, long before the sender is done."""
    limit = quiet_hub.hub.limits.max_bytes
    would_be = 50 * 1024 * 1024
    chunk = b"x" * 64 * 1024
    context = client_ssl_context(quiet_hub.pki.party("be-bru-bee"))
    sent = 0
    answer = b""
    with (
        socket.create_connection(("127.0.0.1", quiet_hub.server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        while sent < would_be and not answer:
            tls.settimeout(5)
            try:
                tls.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (OSError, ssl.SSLError):  # closed by the hub, or no longer read: done
                break
            sent += len(chunk)
            answer = _answered(tls)
        tls.settimeout(10)
        while b"request.too-large" not in answer:
            try:
                data = tls.recv(65536)
            except (OSError, ssl.SSLError):
                break
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request.too-large" in answer
    # Past the limit, and far from the whole: what was sent past the limit sat in the socket
    # buffers (on loopback some 4 MB) when the answer came.
    assert limit < sent < would_be // 3, (sent, limit)
    with quiet_hub.client("operator") as client:
        assert client.get("/healthz").json() == {"status": "ok"}
