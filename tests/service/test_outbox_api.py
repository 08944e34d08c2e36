"""Delivery as the sender and the operator see it, over real HTTPS with mutual TLS: the status of
each delivery, Retry-After honoured, the circuit breaker, and the operator's dead letters."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from gateway.certs import DevPki
from gateway.service.tls import client_ssl_context
from gateway.testing import RunningHub, capture_logs, running_hub, wait_until
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.slow

RECEIVER = "be-vlg-wse"  # the region competent for the portal's example application


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> Iterator[RunningHub]:
    with running_hub(
        tmp_path_factory.mktemp("outbox"),
        pki=pki,
        respond=False,
        delivery_workers=2,
        delivery_backoff_s=0.05,
        delivery_circuit_failures=3,
        delivery_circuit_cooldown_s=3.0,
    ) as running:
        yield running


def operator(live: RunningHub) -> httpx.Client:
    files = live.pki.role("operator")
    return httpx.Client(base_url=live.url, verify=client_ssl_context(files), timeout=10)


def send(live: RunningHub) -> str:
    """The portal's example application, in a case of its own; its message id."""
    body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
    body["header"]["messageId"] = str(uuid.uuid4())
    body["header"]["caseReference"] = f"SP-2026-{random.randrange(10**6):06d}"
    with live.client("be-platform") as client:
        response = client.post(
            "/v1/messages",
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 202, response.text
    return str(body["header"]["messageId"])


def status(live: RunningHub, message_id: str) -> dict[str, Any]:
    with live.client("be-platform") as client:
        response = client.get(f"/v1/messages/{message_id}")
    assert response.status_code == 200, response.text
    (delivery,) = [d for d in response.json()["deliveries"] if d["receiver"] == RECEIVER]
    return dict(delivery)


def state_becomes(live: RunningHub, message_id: str, state: str) -> dict[str, Any]:
    assert wait_until(lambda: status(live, message_id)["state"] == state), status(live, message_id)
    return status(live, message_id)


def delivery_id(live: RunningHub, message_id: str) -> int:
    (row,) = [d for d in live.hub.store.deliveries(message_id) if d.receiver == RECEIVER]
    return row.id


def records(live: RunningHub, message_id: str) -> list[dict[str, Any]]:
    every = (json.loads(leaf.record) for leaf in live.hub.store.leaves())
    return [
        r for r in every if r.get("messageId") == message_id and r["event"] != "exchange.accepted"
    ]


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_delivered_message_shows_when(live: RunningHub) -> None:
    message_id = send(live)
    shown = state_becomes(live, message_id, "delivered")
    assert shown["attempts"] == 1
    assert shown["deliveredAt"] is not None
    assert (shown["nextAttemptAt"], shown["lastStatus"], shown["lastError"]) == (None, None, None)


def test_a_refused_message_is_dead_with_the_receivers_status(live: RunningHub) -> None:
    live.sandbox.offices[RECEIVER].fail_next(1, 422)
    message_id = send(live)
    shown = state_becomes(live, message_id, "dead")
    assert (shown["attempts"], shown["lastStatus"]) == (1, 422)
    assert shown["lastError"] == "rejected: HTTP 422"
    assert shown["deadAt"] is not None
    assert "Injected" not in json.dumps(records(live, message_id))  # the receiver's words: no


def test_retry_after_is_honoured_and_the_retry_is_visible(live: RunningHub) -> None:
    live.sandbox.offices[RECEIVER].fail_next(1, 503, retry_after="2")
    message_id = send(live)
    shown = state_becomes(live, message_id, "retrying")
    assert (shown["lastStatus"], shown["lastError"]) == (503, "failed: HTTP 503")
    assert shown["nextAttemptAt"] is not None
    state_becomes(live, message_id, "delivered")
    failed, delivered = records(live, message_id)
    assert (failed["event"], failed["retryAfter"]) == ("delivery.failed", 2)
    waited = moment(delivered["time"]) - moment(failed["time"])
    assert waited.total_seconds() >= 2.0  # the backoff alone was 0.05 s
    assert moment(failed["nextAttemptAt"]) <= moment(delivered["time"])


def test_the_circuit_opens_then_a_probe_closes_it(live: RunningHub) -> None:
    gauge = f'guichet_circuit_open{{receiver="{RECEIVER}"}}'

    def circuit() -> str:
        with operator(live) as client:
            text = client.get("/metrics").text
        return next((line for line in text.splitlines() if line.startswith(gauge)), "")

    with capture_logs() as logs:
        live.sandbox.offices[RECEIVER].fail_next(3, 503)
        message_id = send(live)
        assert wait_until(lambda: circuit() == f"{gauge} 1.0", timeout=10)
        state_becomes(live, message_id, "delivered")
        assert wait_until(lambda: circuit() == f"{gauge} 0.0")
    attempts = records(live, message_id)
    assert [r["event"] for r in attempts] == ["delivery.failed"] * 3 + ["delivery.delivered"]
    # Backoff would have tried again in well under a second: the open circuit held it 3 s.
    held = moment(attempts[3]["time"]) - moment(attempts[2]["time"])
    assert held.total_seconds() >= 3.0
    events = [e for e in logs.events() if e.get("event", "").startswith("circuit.")]
    assert [e["event"] for e in events if e["event"] != "circuit.half-open"] == [
        "circuit.open",
        "circuit.closed",
    ]
    allowed = {"event", "receiver", "failures", "cooldown_s", "level", "timestamp"}
    assert all(e["receiver"] == RECEIVER and set(e) <= allowed for e in events), events


def test_only_the_operator_sees_the_outbox(live: RunningHub) -> None:
    with live.client("be-platform") as party:
        for response in (
            party.get("/v1/outbox"),
            party.post("/v1/outbox/1/retry"),
            party.post("/v1/outbox/1/discard", json={"reason": "x"}),
        ):
            assert response.status_code == 403
            assert response.json()["code"] == "authz.role-required"


def test_the_operator_lists_and_requeues_a_dead_letter(live: RunningHub) -> None:
    live.sandbox.offices[RECEIVER].fail_next(1, 400)
    message_id = send(live)
    state_becomes(live, message_id, "dead")
    number = delivery_id(live, message_id)
    with operator(live) as client:
        listed = client.get("/v1/outbox", params={"state": "dead", "receiver": RECEIVER})
        assert listed.status_code == 200
        entry = next(d for d in listed.json()["deliveries"] if d["id"] == number)
        assert (entry["messageId"], entry["state"], entry["lastStatus"]) == (
            message_id,
            "dead",
            400,
        )
        assert all(d["state"] == "dead" for d in listed.json()["deliveries"])
        assert client.get("/v1/outbox", params={"state": "lost"}).json()["code"] == "outbox.invalid"
        assert client.get("/v1/outbox", params={"limit": "0"}).status_code == 400
        retried = client.post(f"/v1/outbox/{number}/retry", json={"reason": "receiver fixed"})
        assert retried.status_code == 200, retried.text
        assert retried.json()["state"] in ("pending", "delivering", "delivered")
        shown = state_becomes(live, message_id, "delivered")
        assert shown["attempts"] == 2  # kept, and counted on
        again = client.post(f"/v1/outbox/{number}/retry")
        assert again.status_code == 409
        assert (again.json()["code"], again.json()["state"]) == ("outbox.not-dead", "delivered")
        assert client.post("/v1/outbox/999999/retry").json()["code"] == "outbox.not-found"
        assert client.post("/v1/outbox/abc/retry").json()["code"] == "outbox.not-found"
    requeued = next(r for r in records(live, message_id) if r["event"] == "delivery.requeued")
    assert requeued["deliveryId"] == number
    assert requeued["reason"] == "receiver fixed"
    assert requeued["by"]["certificate"] == "role:operator"
    assert [r["event"] for r in records(live, message_id)] == [
        "delivery.dead",
        "delivery.requeued",
        "delivery.delivered",
    ]


def test_the_operator_discards_a_dead_letter_with_a_reason(live: RunningHub) -> None:
    live.sandbox.offices[RECEIVER].fail_next(1, 400)
    message_id = send(live)
    state_becomes(live, message_id, "dead")
    number = delivery_id(live, message_id)
    with operator(live) as client:
        refused = client.post(f"/v1/outbox/{number}/discard", json={})
        assert (refused.status_code, refused.json()["code"]) == (400, "outbox.invalid")
        assert client.post(f"/v1/outbox/{number}/discard", content=b"{").status_code == 400
        done = client.post(f"/v1/outbox/{number}/discard", json={"reason": "sent by post"})
        assert done.status_code == 200, done.text
        assert (done.json()["state"], done.json()["reason"]) == ("discarded", "sent by post")
        again = client.post(f"/v1/outbox/{number}/retry")
        assert (again.status_code, again.json()["state"]) == (409, "discarded")
    shown = status(live, message_id)
    assert (shown["state"], shown["reason"], shown["lastStatus"]) == (
        "discarded",
        "sent by post",
        400,
    )
    assert shown["discardedAt"] is not None
    time.sleep(0.5)
    assert status(live, message_id)["state"] == "discarded"  # never claimed again
    assert [r["event"] for r in records(live, message_id)] == [
        "delivery.dead",
        "delivery.discarded",
    ]


def test_a_retrying_delivery_may_not_be_requeued(live: RunningHub) -> None:
    live.sandbox.offices[RECEIVER].fail_next(1, 503, retry_after="600")
    message_id = send(live)
    shown = state_becomes(live, message_id, "retrying")
    assert shown["nextAttemptAt"] is not None
    with operator(live) as client:
        refused = client.post(f"/v1/outbox/{delivery_id(live, message_id)}/retry")
    assert (refused.status_code, refused.json()["state"]) == (409, "retrying")
