"""The outbox: outcomes sealed, retries bounded by attempts and age, 4xx straight to dead letter,
leases honoured, nothing of a receiver's answer in the evidence."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters import DeliveryResult, Outbound
from gateway.certs import init_dev_pki, write_master_key
from gateway.evidence import HubSigner
from gateway.outbox import Outbox, RetryPolicy, iso
from gateway.payloads import Keyring
from gateway.store import MessageRow
from gateway.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
SECRET = "85073003328"  # a national number a receiver might quote back
BODY_SHA = hashlib.sha256(b"{}").hexdigest()


class ScriptedAdapter:
    """Answers each delivery with the next scripted result (or raises it)."""

    def __init__(self, *script: DeliveryResult | Exception) -> None:
        self.script = list(script)
        self.calls: list[Outbound] = []

    def deliver(self, outbound: Outbound) -> DeliveryResult:
        self.calls.append(outbound)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    def close(self) -> None:
        pass


def result(outcome: str, status: int | None) -> DeliveryResult:
    body = f'{{"detail": "bad INSZ {SECRET}"}}'.encode()
    return DeliveryResult(outcome, status, body, f"HTTP {status}: bad INSZ {SECRET}", 1.0)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    write_master_key(tmp_path / "payload-master.key")
    store = SqliteStore(tmp_path / "s.db", Keyring.from_files(tmp_path / "payload-master.key"))

    def seed(unit: object) -> None:
        unit.put_payload(BODY_SHA, b"{}")  # type: ignore[attr-defined]
        unit.insert_message(
            MessageRow(  # type: ignore[attr-defined]
                "m1",
                "be-platform",
                "application.submitted",
                "SP-1",
                "t1",
                None,
                iso(T0),
                "b" * 64,
                0,
                "{}",
            )
        )
        unit.add_delivery("m1", "be-vlg-wse", BODY_SHA, "application/json", iso(T0))  # type: ignore[attr-defined]

    store.write(seed)
    yield store
    store.close()


@pytest.fixture
def signer(tmp_path: Path) -> HubSigner:
    pki = init_dev_pki(tmp_path / "pki", [])
    return HubSigner.from_files(pki.signing_key, pki.signing_cert)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def outbox(
    store: SqliteStore, signer: HubSigner, adapter: ScriptedAdapter, clock: Clock, **policy: float
) -> Outbox:
    return Outbox(store, {"be-vlg-wse": adapter}, signer, RetryPolicy(**policy), clock=clock)  # type: ignore[arg-type]


def events(store: SqliteStore) -> list[dict[str, object]]:
    return [json.loads(leaf.record) for leaf in store.leaves()]


def test_a_4xx_goes_straight_to_dead_letter(store: SqliteStore, signer: HubSigner) -> None:
    clock = Clock()
    box = outbox(store, signer, ScriptedAdapter(result("rejected", 400)), clock)
    assert box.run_once() == 1
    (delivery,) = store.deliveries("m1")
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("dead", 1, 400)
    clock.now += timedelta(days=1)
    assert box.run_once() == 0  # never claimed again
    assert [e["event"] for e in events(store)] == ["delivery.dead"]


def test_failures_are_retried_then_delivered(store: SqliteStore, signer: HubSigner) -> None:
    clock = Clock()
    adapter = ScriptedAdapter(
        result("failed", 503), ConnectionError("boom"), result("delivered", 202)
    )
    box = outbox(store, signer, adapter, clock, backoff_s=1.0)
    assert box.run_once() == 1
    (delivery,) = store.deliveries("m1")
    assert delivery.state == "retrying"
    assert box.run_once() == 0  # not due yet
    clock.now += timedelta(seconds=2)
    assert box.run_once() == 1  # the adapter raised: a failed attempt, not a crash
    assert store.deliveries("m1")[0].state == "retrying"
    clock.now += timedelta(seconds=5)
    assert box.run_once() == 1
    (delivery,) = store.deliveries("m1")
    assert (delivery.state, delivery.attempts) == ("delivered", 3)
    assert [e["event"] for e in events(store)] == [
        "delivery.failed",
        "delivery.failed",
        "delivery.delivered",
    ]
    assert [c.attempt for c in adapter.calls] == [1, 2, 3]


def test_retries_stop_after_max_attempts(store: SqliteStore, signer: HubSigner) -> None:
    clock = Clock()
    adapter = ScriptedAdapter(*[result("failed", 503)] * 3)
    box = outbox(store, signer, adapter, clock, backoff_s=1.0, max_attempts=3)
    for _ in range(3):
        box.run_once()
        clock.now += timedelta(hours=1)
    assert store.deliveries("m1")[0].state == "dead"
    assert events(store)[-1]["event"] == "delivery.dead"
    assert box.run_once() == 0


def test_retries_stop_after_max_age(store: SqliteStore, signer: HubSigner) -> None:
    clock = Clock()
    clock.now = T0 + timedelta(hours=49)
    box = outbox(store, signer, ScriptedAdapter(result("failed", 503)), clock)
    box.run_once()
    assert store.deliveries("m1")[0].state == "dead"


def test_a_worker_whose_lease_ran_out_cannot_finish(store: SqliteStore, signer: HubSigner) -> None:
    clock = Clock()
    late = store.write(lambda u: u.claim_deliveries(iso(T0), iso(T0 + timedelta(seconds=1)), 1))
    # The lease runs out; another worker claims and delivers the row.
    clock.now = T0 + timedelta(seconds=5)
    box = outbox(store, signer, ScriptedAdapter(result("delivered", 202)), clock)
    assert box.run_once() == 1
    stale = store.write(
        lambda u: u.finish_delivery(
            late[0].id,
            late[0].attempts,
            "dead",
            status=500,
            error="late",
            next_attempt_at=iso(T0),
            delivered_at=None,
        )
    )
    assert stale is False
    (delivery,) = store.deliveries("m1")
    assert (delivery.state, delivery.attempts) == ("delivered", 2)
    assert [e["event"] for e in events(store)] == ["delivery.delivered"]


def test_no_receiver_text_in_evidence_or_status(store: SqliteStore, signer: HubSigner) -> None:
    box = outbox(store, signer, ScriptedAdapter(result("rejected", 422)), Clock())
    box.run_once()
    assert SECRET not in json.dumps(events(store))
    assert SECRET not in (store.deliveries("m1")[0].last_error or "")
    response_digest = events(store)[0]["response"]["sha256"]  # type: ignore[index]
    assert store.payload(response_digest) is not None  # the answer is kept beside the log


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(backoff_s=1.0, backoff_cap_s=60.0, jitter=0.2)
    delays = [(policy.next_attempt(n, T0) - T0).total_seconds() for n in (1, 2, 3, 30, 30)]
    assert 0.8 <= delays[0] <= 1.2
    assert 1.6 <= delays[1] <= 2.4
    assert 3.2 <= delays[2] <= 4.8
    assert all(48 <= d <= 72 for d in delays[3:])
