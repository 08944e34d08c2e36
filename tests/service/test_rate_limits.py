"""Rate limits per party over real HTTP: 429 with Retry-After before the body is read, sealed as
evidence without a record per refusal, and other parties untouched."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from gateway.certs import DevPki
from gateway.testing import running_hub

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JSON = {"Content-Type": "application/json"}


def _application() -> bytes:
    body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
    body["header"]["messageId"] = str(uuid.uuid4())
    return json.dumps(body).encode()


def _records(store: object, event: str) -> list[dict[str, object]]:
    leaves = store.leaves()  # type: ignore[attr-defined]
    return [r for r in (json.loads(leaf.record) for leaf in leaves) if r["event"] == event]


def test_a_party_over_its_rate_gets_429_and_the_refusals_are_sealed_once(
    tmp_path: Path, pki: DevPki
) -> None:
    with running_hub(
        tmp_path / "hub",
        pki=pki,
        sandbox=False,
        delivery_workers=0,
        rate_limit_per_s=0.2,  # one message every 5 s, after a burst of 2
        rate_limit_burst=2,
        rate_limit_evidence_s=60,
    ) as live:
        with live.client("be-platform") as portal:
            answers = [
                portal.post("/v1/messages", content=_application(), headers=JSON) for _ in range(6)
            ]
        statuses = [a.status_code for a in answers]
        assert statuses == [202, 202, 429, 429, 429, 429], statuses
        refused = answers[2]
        assert refused.json()["code"] == "request.rate-limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 5
        assert refused.headers["content-type"] == "application/problem+json"
        # Another party has a bucket of its own; over SOAP the refusal is a Fault, sent with 429.
        envelope = (EXAMPLES / "be-wal-spw" / "status.updated.xml").read_bytes()
        with live.client("be-wal-spw") as wallonia:
            soap = [
                wallonia.post("/soap/v1", content=envelope, headers={"Content-Type": "text/xml"})
                for _ in range(3)
            ]
        assert [a.status_code for a in soap] == [500, 500, 429]  # (unknown case, twice)
        assert b"<h:code>request.rate-limited</h:code>" in soap[2].content
        assert int(soap[2].headers["Retry-After"]) >= 1
        # The first refusal of each party is sealed at once; those after it wait for the
        # interval (or the end of the service).
        first = _records(live.hub.store, "rate.limited")
        assert [(r["party"], r["refused"]) for r in first] == [
            ("be-platform", 1),
            ("be-wal-spw", 1),
        ]
        assert set(first[0]) >= {"party", "refused", "firstAt", "lastAt", "rate", "burst"}


def test_the_tail_of_a_flood_is_sealed_when_the_service_stops(tmp_path: Path, pki: DevPki) -> None:
    from gateway.store import open_store

    data = tmp_path / "hub"
    with running_hub(
        data,
        pki=pki,
        sandbox=False,
        delivery_workers=0,
        rate_limit_per_s=0.1,
        rate_limit_burst=1,
        rate_limit_evidence_s=60,
    ) as live:
        with live.client("be-platform") as portal:
            statuses = [
                portal.post("/v1/messages", content=_application(), headers=JSON).status_code
                for _ in range(5)
            ]
        assert statuses == [202, 429, 429, 429, 429]
        url = live.hub.config.store_url
    store = open_store(url, data, None)
    try:
        records = _records(store, "rate.limited")
    finally:
        store.close()
    assert [r["refused"] for r in records] == [1, 3]
    assert sum(int(r["refused"]) for r in records) == 4  # type: ignore[call-overload]
    assert all(r["party"] == "be-platform" and r["burst"] == 1 for r in records)
