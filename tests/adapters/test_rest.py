"""The REST adapter against the sandbox back offices: real HTTPS, mutual TLS, loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from adapters import Outbound, ReceiverConfig, load_adapter, retry_after
from adapters.rest import RestAdapter
from gateway.certs import DevPki, PartyIdentity, init_dev_pki
from gateway.mapping import MappingSet
from gateway.sandbox import Sandbox
from gateway.signing import SigningKey

pytestmark = pytest.mark.slow

HOME = Path(__file__).resolve().parents[2]
PARTIES = (
    PartyIdentity("be-platform", "Working in Belgium", "0316380940"),
    PartyIdentity("be-vlg-wse", "Departement WSE", "0316380841"),
)
# What the hub sends the REST parties: the outputs of their from-canonical golden pairs.
GOLDEN = sorted(
    path
    for party in ("be-platform", "be-vlg-wse")
    for path in (HOME / "mappings" / party / "from-canonical").glob("*.expected.json")
)
FLANDERS_APPLICATION = (
    HOME / "mappings/be-vlg-wse/from-canonical/application.submitted.expected.json"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki"), PARTIES)


@pytest.fixture(scope="module")
def sandbox(pki: DevPki) -> Iterator[Sandbox]:
    mappings = MappingSet.load(HOME)
    parties = [p.party_id for p in PARTIES]
    with Sandbox(mappings, pki, parties, HOME / "examples", respond=False) as running:
        yield running


def config_for(party: str, endpoint: str, pki: DevPki) -> ReceiverConfig:
    return ReceiverConfig(
        party=party,
        protocol="rest",
        endpoint=endpoint,
        schema_dir=HOME / "schemas" / party,
        client_cert=pki.hub_cert,
        client_key=pki.hub_key,
        ca=pki.ca_cert,
        timeout_s=5.0,
        signer=SigningKey.from_files(pki.hub_cert, pki.hub_key),
    )


@pytest.fixture
def adapter(sandbox: Sandbox, pki: DevPki, request: pytest.FixtureRequest) -> Iterator[RestAdapter]:
    party = getattr(request, "param", "be-vlg-wse")
    rest = RestAdapter(config_for(party, sandbox.endpoints[party], pki))
    yield rest
    rest.close()


def outbound(party: str, body: bytes, message_type: str, message_id: str | None = None) -> Outbound:
    return Outbound(
        message_id=message_id or str(uuid.uuid4()),
        message_type=message_type,
        receiver=party,
        body=body,
        content_type="application/json",
        trace_id=str(uuid.uuid4()),
        attempt=1,
    )


def test_the_entry_point_names_the_rest_adapter() -> None:
    assert load_adapter("rest") is RestAdapter


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: f"{p.parents[1].name}/{p.stem}")
def test_delivers_what_the_hub_sends(sandbox: Sandbox, pki: DevPki, path: Path) -> None:
    party = path.parents[1].name
    message_type = path.name.removesuffix(".expected.json")
    message = outbound(party, path.read_bytes(), message_type)
    rest = RestAdapter(config_for(party, sandbox.endpoints[party], pki))
    try:
        result = rest.deliver(message)
    finally:
        rest.close()
    assert (result.outcome, result.status, result.detail) == ("delivered", 202, "")
    office = sandbox.offices[party]
    got = office.wait_for(lambda r: r.idempotency_key == message.message_id)
    assert got.body == message.body
    assert got.trace_id == message.trace_id
    assert got.message_type == message_type
    assert not got.duplicate
    assert result.response == f'{{"received": "{got.message_id}"}}'.encode()


def test_a_second_delivery_of_the_same_id_is_a_duplicate(
    sandbox: Sandbox, adapter: RestAdapter
) -> None:
    office = sandbox.offices["be-vlg-wse"]
    message = outbound("be-vlg-wse", FLANDERS_APPLICATION.read_bytes(), "application.submitted")
    before = office.duplicates
    first = adapter.deliver(message)
    again = adapter.deliver(message)
    assert first.outcome == again.outcome == "delivered"
    assert first.response == again.response
    assert office.duplicates == before + 1
    records = [r for r in office.received if r.idempotency_key == message.message_id]
    assert [r.duplicate for r in records] == [False, True]


@pytest.mark.parametrize(
    ("status", "outcome"), [(503, "failed"), (500, "failed"), (429, "failed"), (400, "rejected")]
)
def test_an_injected_status_is_classified(
    sandbox: Sandbox, adapter: RestAdapter, status: int, outcome: str
) -> None:
    office = sandbox.offices["be-vlg-wse"]
    message = outbound("be-vlg-wse", FLANDERS_APPLICATION.read_bytes(), "application.submitted")
    office.fail_next(1, status)
    result = adapter.deliver(message)
    assert (result.outcome, result.status) == (outcome, status)
    assert str(status) in result.detail
    assert not [r for r in office.received if r.idempotency_key == message.message_id]
    # The next attempt (a retry) goes through.
    retry = adapter.deliver(message)
    assert retry.outcome == "delivered"


def test_an_invalid_body_is_rejected_with_the_problem_detail(
    sandbox: Sandbox, adapter: RestAdapter
) -> None:
    body = FLANDERS_APPLICATION.read_bytes().replace(b'"HOOGGESCHOOLD"', b'"ONBEKEND"')
    result = adapter.deliver(outbound("be-vlg-wse", body, "application.submitted"))
    assert (result.outcome, result.status) == ("rejected", 422)
    assert "ONBEKEND" in result.detail
    assert b'"status": 422' in result.response


def test_a_back_office_that_is_down_fails(pki: DevPki, tmp_path: Path) -> None:
    mappings = MappingSet.load(HOME)
    with Sandbox(mappings, pki, ["be-platform"], HOME / "examples", respond=False) as stopped:
        endpoint = stopped.endpoints["be-platform"]
    rest = RestAdapter(config_for("be-platform", endpoint, pki))
    try:
        result = rest.deliver(outbound("be-platform", GOLDEN[0].read_bytes(), "x"))
    finally:
        rest.close()
    assert (result.outcome, result.status) == ("failed", None)
    assert result.detail.startswith("transport")


def _http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


@pytest.mark.parametrize(
    ("status", "header", "low", "high"),
    [
        (503, "120", 120.0, 120.0),
        (429, "7", 7.0, 7.0),
        (503, "in a while", None, None),  # neither form: ignored
        (500, "120", None, None),  # only 429 and 503 say "later"
    ],
)
def test_retry_after_is_read_from_429_and_503(
    sandbox: Sandbox,
    adapter: RestAdapter,
    status: int,
    header: str,
    low: float | None,
    high: float | None,
) -> None:
    office = sandbox.offices["be-vlg-wse"]
    office.fail_next(1, status, retry_after=header)
    message = outbound("be-vlg-wse", FLANDERS_APPLICATION.read_bytes(), "application.submitted")
    result = adapter.deliver(message)
    assert (result.outcome, result.status) == ("failed", status)
    if low is None:
        assert result.retry_after_s is None
    else:
        assert result.retry_after_s is not None
        assert low <= result.retry_after_s <= (high or low)
    assert adapter.deliver(message).retry_after_s is None  # delivered: nothing to wait for


def test_retry_after_as_an_http_date(sandbox: Sandbox, adapter: RestAdapter) -> None:
    office = sandbox.offices["be-vlg-wse"]
    office.fail_next(1, 503, retry_after=_http_date(datetime.now(UTC) + timedelta(seconds=90)))
    message = outbound("be-vlg-wse", FLANDERS_APPLICATION.read_bytes(), "application.submitted")
    result = adapter.deliver(message)
    assert result.retry_after_s is not None
    assert 85 <= result.retry_after_s <= 90  # the date has whole seconds
    office.fail_next(1, 429, retry_after=_http_date(datetime.now(UTC) - timedelta(hours=1)))
    assert adapter.deliver(message).retry_after_s == 0.0  # a date past: now


def test_retry_after_parsing() -> None:
    now = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)

    def answer(status: int, value: str | None) -> httpx.Response:
        headers = {"Retry-After": value.encode()} if value is not None else {}
        return httpx.Response(status, headers=headers)

    assert retry_after(answer(503, "30"), now) == 30.0
    assert retry_after(answer(503, " 30 "), now) == 30.0
    assert retry_after(answer(503, "Fri, 27 Nov 2026 10:01:00 GMT"), now) == 60.0
    assert retry_after(answer(429, "Fri, 27 Nov 2026 09:00:00 GMT"), now) == 0.0
    assert retry_after(answer(503, "-5"), now) is None
    assert retry_after(answer(503, "1.5"), now) is None
    assert retry_after(answer(503, "٣٠"), now) is None  # Arabic-Indic digits are no delta-seconds
    assert retry_after(answer(503, None), now) is None
    assert retry_after(answer(502, "30"), now) is None
