"""The outbox: outcomes sealed, retries bounded by attempts and age, 4xx straight to dead letter,
leases honoured, nothing of a receiver's answer in the evidence."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from adapters import DeliveryResult, Outbound
from gateway.certs import init_dev_pki, write_master_key
from gateway.config import Settings, load_parties
from gateway.errors import ConfigurationError, NotFoundError, OutboxError
from gateway.evidence import HubSigner
from gateway.outbox import (
    CircuitBreaker,
    Outbox,
    RetryPolicy,
    _reason,
    delivery_policies,
    delivery_status,
    discard,
    iso,
    requeue,
)
from gateway.payloads import Keyring
from gateway.store import DeliveryRow, MessageRow, open_store
from gateway.store.sql import SqlStore, migrations, statements
from gateway.store.sqlite import SqliteStore

HOME = Path(__file__).resolve().parents[2]
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
def store(tmp_path: Path) -> Iterator[SqlStore]:
    write_master_key(tmp_path / "payload-master.key")
    store = open_store(None, tmp_path, Keyring.from_files(tmp_path / "payload-master.key"))

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
    store: SqlStore, signer: HubSigner, adapter: ScriptedAdapter, clock: Clock, **policy: float
) -> Outbox:
    return Outbox(store, {"be-vlg-wse": adapter}, signer, RetryPolicy(**policy), clock=clock)  # type: ignore[arg-type]


def events(store: SqlStore) -> list[dict[str, object]]:
    return [json.loads(leaf.record) for leaf in store.leaves()]


def test_a_4xx_goes_straight_to_dead_letter(store: SqlStore, signer: HubSigner) -> None:
    clock = Clock()
    box = outbox(store, signer, ScriptedAdapter(result("rejected", 400)), clock)
    assert box.run_once() == 1
    (delivery,) = store.deliveries("m1")
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("dead", 1, 400)
    clock.now += timedelta(days=1)
    assert box.run_once() == 0  # never claimed again
    assert [e["event"] for e in events(store)] == ["delivery.dead"]


def test_failures_are_retried_then_delivered(store: SqlStore, signer: HubSigner) -> None:
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


def test_retries_stop_after_max_attempts(store: SqlStore, signer: HubSigner) -> None:
    clock = Clock()
    adapter = ScriptedAdapter(*[result("failed", 503)] * 3)
    box = outbox(store, signer, adapter, clock, backoff_s=1.0, max_attempts=3)
    for _ in range(3):
        box.run_once()
        clock.now += timedelta(hours=1)
    assert store.deliveries("m1")[0].state == "dead"
    assert events(store)[-1]["event"] == "delivery.dead"
    assert box.run_once() == 0


def test_retries_stop_after_max_age(store: SqlStore, signer: HubSigner) -> None:
    clock = Clock()
    clock.now = T0 + timedelta(hours=49)
    box = outbox(store, signer, ScriptedAdapter(result("failed", 503)), clock)
    box.run_once()
    assert store.deliveries("m1")[0].state == "dead"


def test_a_worker_whose_lease_ran_out_cannot_finish(store: SqlStore, signer: HubSigner) -> None:
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


def test_no_receiver_text_in_evidence_or_status(store: SqlStore, signer: HubSigner) -> None:
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


# -- Retry-After, per-party policy ----------------------------------------------------------------


def test_retry_after_is_a_floor_capped_by_the_backoff_cap() -> None:
    policy = RetryPolicy(backoff_s=1.0, backoff_cap_s=600.0, jitter=0.0)
    assert policy.next_attempt(1, T0, retry_after_s=120.0) == T0 + timedelta(seconds=120)
    # A Retry-After shorter than the backoff changes nothing: the backoff is kept.
    assert policy.next_attempt(8, T0, retry_after_s=1.0) == T0 + timedelta(seconds=128)
    # A receiver asking for a day waits the cap only.
    assert policy.next_attempt(1, T0, retry_after_s=86400.0) == T0 + timedelta(seconds=600)


def test_no_attempt_is_put_off_past_the_max_age() -> None:
    policy = RetryPolicy(backoff_s=1.0, backoff_cap_s=3600.0, jitter=0.0, max_age_s=7200.0)
    accepted = T0 - timedelta(seconds=7000)  # 200 s of its age left
    at = policy.next_attempt(1, T0, retry_after_s=3000.0, accepted_at=accepted)
    assert at == accepted + timedelta(seconds=7200)


def test_a_failure_with_retry_after_waits_and_says_so(store: SqlStore, signer: HubSigner) -> None:
    clock = Clock()
    throttled = DeliveryResult("failed", 429, b"", "HTTP 429", 1.0, retry_after_s=30.0)
    adapter = ScriptedAdapter(throttled, result("delivered", 202))
    box = outbox(store, signer, adapter, clock, backoff_s=1.0, jitter=0.0)
    assert box.run_once() == 1
    (failed,) = events(store)
    assert failed["nextAttemptAt"] == iso(T0 + timedelta(seconds=30))
    assert failed["retryAfter"] == 30
    assert store.deliveries("m1")[0].next_attempt_at == iso(T0 + timedelta(seconds=30))
    clock.now += timedelta(seconds=29)
    assert box.run_once() == 0  # the backoff alone (1 s) would have let it go
    clock.now += timedelta(seconds=1)
    assert box.run_once() == 1
    assert store.deliveries("m1")[0].state == "delivered"


def test_the_receivers_own_policy_is_used(store: SqlStore, signer: HubSigner) -> None:
    clock = Clock()
    adapter = ScriptedAdapter(*[result("failed", 503)] * 2)
    box = Outbox(
        store,
        {"be-vlg-wse": adapter},  # type: ignore[dict-item]
        signer,
        RetryPolicy(max_attempts=100, backoff_s=1.0),
        policies={"be-vlg-wse": RetryPolicy(max_attempts=2, backoff_s=1.0)},
        clock=clock,
    )
    box.run_once()
    clock.now += timedelta(hours=1)
    box.run_once()
    assert store.deliveries("m1")[0].state == "dead"  # after 2 attempts, not 100


def parties_toml(tmp_path: Path, delivery: str) -> Path:
    text = (HOME / "parties.toml").read_text()
    marker = "[parties.be-bru-bee]\n"
    path = tmp_path / "parties.toml"
    path.write_text(text.replace(marker, f"{delivery}\n{marker}", 1))
    return path


def test_a_party_delivery_table_overrides_the_settings(tmp_path: Path) -> None:
    table = "[parties.be-wal-spw.delivery]\nmax_attempts = 7\nbackoff_cap_s = 60\ntimeout_s = 50\n"
    parties = load_parties(parties_toml(tmp_path, table))
    settings = Settings(delivery_backoff_s=2.0, delivery_circuit_failures=9)
    policies = delivery_policies(settings, parties)
    wallonia, flanders = policies["be-wal-spw"], policies["be-vlg-wse"]
    assert (wallonia.max_attempts, wallonia.backoff_cap_s, wallonia.timeout_s) == (7, 60.0, 50.0)
    assert (wallonia.backoff_s, wallonia.circuit_failures) == (2.0, 9)  # from the settings
    assert wallonia.lease_s == 200.0  # a lease outlasts four timeouts
    assert (flanders.max_attempts, flanders.timeout_s, flanders.lease_s) == (100, 10.0, 120.0)


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ("max_attempt = 3", "unknown keys ['max_attempt']"),
        ("max_attempts = 2.5", "max_attempts must be a whole number"),
        ("max_attempts = true", "max_attempts must be a whole number"),
        ("backoff_s = -1", "backoff_s must be positive"),
        ("timeout_s = '10'", "timeout_s must be a number"),
        ("jitter = 1.5", "jitter must be in [0, 1)"),
    ],
)
def test_a_bad_delivery_table_is_refused_at_load(tmp_path: Path, table: str, words: str) -> None:
    path = parties_toml(tmp_path, f"[parties.be-wal-spw.delivery]\n{table}\n")
    with pytest.raises(ConfigurationError, match="be-wal-spw") as raised:
        load_parties(path)
    assert words in raised.value.detail


# -- circuit breaker --------------------------------------------------------------------------


def breaker(**policy: float) -> tuple[CircuitBreaker, list[tuple[str, bool]]]:
    changes: list[tuple[str, bool]] = []
    chosen = RetryPolicy(**policy)  # type: ignore[arg-type]
    return CircuitBreaker(lambda _: chosen, lambda r, o: changes.append((r, o))), changes


def test_the_circuit_opens_after_n_failures_in_a_row() -> None:
    circuits, changes = breaker(circuit_failures=3, circuit_cooldown_s=30.0)
    for _ in range(2):
        circuits.record("r", "down", T0, probe=False)
    circuits.record("r", "up", T0, probe=False)  # an answer resets the count
    for _ in range(2):
        circuits.record("r", "down", T0, probe=False)
    assert circuits.excluded(T0) == []
    circuits.record("r", "down", T0, probe=False)
    assert circuits.excluded(T0) == ["r"]
    assert circuits.state("r", T0 + timedelta(seconds=29)) == "open"
    assert changes == [("r", True)]


def test_half_open_lets_one_probe_through_then_closes() -> None:
    circuits, changes = breaker(circuit_failures=1, circuit_cooldown_s=30.0)
    circuits.record("r", "down", T0, probe=False)
    later = T0 + timedelta(seconds=30)
    assert circuits.excluded(later) == []  # half-open: a row may be claimed …
    assert circuits.claimed("r") is True  # … and it is the probe
    assert circuits.excluded(later) == ["r"]  # no second one while it is in hand
    circuits.record("r", "up", later, probe=True)
    assert circuits.state("r", later) == "closed"
    assert circuits.excluded(later) == []
    assert circuits.claimed("r") is False
    assert changes == [("r", True), ("r", False)]


def test_a_failed_probe_reopens_for_twice_the_cooldown_up_to_the_cap() -> None:
    circuits, _ = breaker(circuit_failures=1, circuit_cooldown_s=30.0, circuit_cooldown_cap_s=100.0)
    circuits.record("r", "down", T0, probe=False)
    now = T0
    for cooldown in (30, 60, 100, 100):
        assert circuits.state("r", now + timedelta(seconds=cooldown - 1)) == "open"
        now += timedelta(seconds=cooldown)
        assert circuits.excluded(now) == []
        assert circuits.claimed("r")
        circuits.record("r", "down", now, probe=True)
    assert circuits.excluded(now) == ["r"]


def test_a_probe_that_says_nothing_frees_the_half_open_circuit() -> None:
    circuits, _ = breaker(circuit_failures=1, circuit_cooldown_s=10.0)
    circuits.record("r", "down", T0, probe=False)
    later = T0 + timedelta(seconds=10)
    assert circuits.excluded(later) == []
    assert circuits.claimed("r")
    circuits.record("r", "neither", later, probe=True)  # e.g. a purged payload: no call made
    assert circuits.state("r", later) == "half-open"
    assert circuits.excluded(later) == []


# -- with the store: circuit, order per case, dead letters ----------------------------------------


def add_message(
    store: SqlStore, message_id: str, subject: str, receiver: str = "be-vlg-wse"
) -> None:
    def work(unit: object) -> None:
        unit.insert_message(  # type: ignore[attr-defined]
            MessageRow(
                message_id, "be-platform", "t", subject, "t", None, iso(T0), "b" * 64, 0, "{}"
            )
        )
        unit.add_delivery(message_id, receiver, BODY_SHA, "application/json", iso(T0))  # type: ignore[attr-defined]

    store.write(work)


def test_an_open_circuit_holds_its_receivers_rows_only(store: SqlStore, signer: HubSigner) -> None:
    clock = Clock()
    add_message(store, "m2", "SP-2")
    add_message(store, "w1", "SP-3", receiver="be-wal-spw")
    flanders = ScriptedAdapter(
        result("failed", 503), result("failed", 503), result("delivered", 202)
    )
    wallonia = ScriptedAdapter(result("delivered", 202))
    policy = RetryPolicy(backoff_s=0.001, jitter=0.0, circuit_failures=2, circuit_cooldown_s=60.0)
    changes: list[tuple[str, bool]] = []
    box = Outbox(
        store,
        {"be-vlg-wse": flanders, "be-wal-spw": wallonia},  # type: ignore[dict-item]
        signer,
        policy,
        clock=clock,
        on_circuit=lambda r, o: changes.append((r, o)),
    )
    assert box.run_once() == 1  # m1 fails
    assert box.run_once() == 1  # m2 fails: the circuit opens
    assert changes == [("be-vlg-wse", True)]
    clock.now += timedelta(seconds=1)  # both rows due again, but the circuit is open
    assert box.run_once(limit=5) == 1  # only Wallonia's row
    assert [c.receiver for c in wallonia.calls] == ["be-wal-spw"]
    assert len(flanders.calls) == 2
    clock.now += timedelta(seconds=60)  # half-open: one probe, which succeeds
    assert box.run_once() == 1
    assert changes == [("be-vlg-wse", True), ("be-vlg-wse", False)]
    assert box.breaker.state("be-vlg-wse", clock.now) == "closed"
    flanders.script.append(result("delivered", 202))
    assert box.run_once() == 1  # closed: m2, held while the circuit was open, goes now
    assert [c.message_id for c in flanders.calls] == ["m1", "m2", "m1", "m2"]
    assert {d.state for m in ("m1", "m2") for d in store.deliveries(m)} == {"delivered"}


def test_a_case_reaches_its_receiver_in_order(store: SqlStore, signer: HubSigner) -> None:
    clock = Clock()
    add_message(store, "m2", "SP-1")  # the same case as m1, accepted after it
    add_message(store, "m3", "SP-9")  # another case
    adapter = ScriptedAdapter(
        result("failed", 503),
        result("delivered", 202),
        result("delivered", 202),
        result("delivered", 202),
    )
    box = outbox(store, signer, adapter, clock, backoff_s=10.0, jitter=0.0)
    assert box.run_once() == 1  # m1 fails: retrying
    clock.now += timedelta(seconds=1)
    assert box.run_once(limit=5) == 1  # m3 goes; m2 waits behind m1
    assert [c.message_id for c in adapter.calls] == ["m1", "m3"]
    assert store.deliveries("m2")[0].state == "pending"
    clock.now += timedelta(seconds=10)
    assert box.run_once(limit=5) == 2
    assert [c.message_id for c in adapter.calls] == ["m1", "m3", "m1", "m2"]


def test_a_dead_delivery_does_not_hold_its_case(store: SqlStore, signer: HubSigner) -> None:
    clock = Clock()
    add_message(store, "m2", "SP-1")
    adapter = ScriptedAdapter(result("rejected", 400), result("delivered", 202))
    box = outbox(store, signer, adapter, clock)
    assert box.run_once(limit=5) == 2
    assert [(c.message_id) for c in adapter.calls] == ["m1", "m2"]
    assert store.deliveries("m1")[0].state == "dead"
    assert store.deliveries("m2")[0].state == "delivered"


OPERATOR = {"command": "test", "user": "tester"}


def test_a_dead_letter_is_requeued_with_its_attempts(store: SqlStore, signer: HubSigner) -> None:
    clock = Clock()
    adapter = ScriptedAdapter(result("rejected", 400), result("delivered", 202))
    box = outbox(store, signer, adapter, clock)
    box.run_once()
    (dead,) = store.deliveries("m1")
    clock.now += timedelta(hours=1)
    row = requeue(store, signer, dead.id, by=OPERATOR, reason="fixed", now=clock.now)
    assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 1, iso(clock.now))
    assert delivery_status(row)["nextAttemptAt"] == iso(clock.now)
    assert box.run_once() == 1
    assert store.deliveries("m1")[0].state == "delivered"
    assert adapter.calls[-1].attempt == 2
    requeued = events(store)[1]
    assert requeued == {
        "v": 1,
        "event": "delivery.requeued",
        "time": iso(clock.now),
        "deliveryId": dead.id,
        "messageId": "m1",
        "receiver": "be-vlg-wse",
        "attempts": 1,
        "lastStatus": 400,
        "reason": "fixed",
        "by": OPERATOR,
    }


def test_only_a_dead_letter_may_be_requeued_or_discarded(
    store: SqlStore, signer: HubSigner
) -> None:
    (pending,) = store.deliveries("m1")
    with pytest.raises(OutboxError) as raised:
        requeue(store, signer, pending.id, by=OPERATOR)
    assert (raised.value.code, raised.value.extra) == ("outbox.not-dead", {"state": "pending"})
    with pytest.raises(OutboxError, match="only a dead letter"):
        discard(store, signer, pending.id, by=OPERATOR, reason="no")
    with pytest.raises(NotFoundError) as missing:
        requeue(store, signer, 4242, by=OPERATOR)
    assert missing.value.code == "outbox.not-found"
    assert events(store) == []  # nothing sealed for a refused action
    assert store.deliveries("m1")[0].state == "pending"


def test_a_discarded_letter_keeps_its_reason_and_is_never_claimed(
    store: SqlStore, signer: HubSigner
) -> None:
    clock = Clock()
    box = outbox(store, signer, ScriptedAdapter(result("rejected", 422)), clock)
    box.run_once()
    (dead,) = store.deliveries("m1")
    with pytest.raises(OutboxError) as blank:
        discard(store, signer, dead.id, by=OPERATOR, reason="  ")
    assert blank.value.code == "outbox.invalid"
    row = discard(store, signer, dead.id, by=OPERATOR, reason="sent by post", now=T0)
    assert (row.state, row.discard_reason, row.discarded_at) == (
        "discarded",
        "sent by post",
        iso(T0),
    )
    shown = delivery_status(row)
    assert (shown["state"], shown["reason"], shown["lastStatus"]) == (
        "discarded",
        "sent by post",
        422,
    )
    clock.now += timedelta(days=3)
    assert box.run_once() == 0
    assert [e["event"] for e in events(store)] == ["delivery.dead", "delivery.discarded"]
    assert store.list_deliveries("discarded", "be-vlg-wse", 10) == [row]
    assert store.list_deliveries("dead", None, 10) == []


def test_the_status_shows_what_each_state_means() -> None:
    base = DeliveryRow(
        1, "m1", "r", "pending", BODY_SHA, "application/json", 0, iso(T0), None, None, None
    )
    shown = delivery_status(base)
    assert (shown["state"], shown["nextAttemptAt"], shown["deliveredAt"]) == (
        "pending",
        iso(T0),
        None,
    )
    retrying = delivery_status(
        replace(base, state="retrying", attempts=2, last_status=503, last_error="failed: HTTP 503")
    )
    assert (retrying["nextAttemptAt"], retrying["lastStatus"], retrying["lastError"]) == (
        iso(T0),
        503,
        "failed: HTTP 503",
    )
    delivered = delivery_status(
        replace(base, state="delivered", attempts=1, delivered_at=iso(T0), last_status=202)
    )
    assert (delivered["deliveredAt"], delivered["nextAttemptAt"], delivered["lastStatus"]) == (
        iso(T0),
        None,
        None,
    )
    dead = delivery_status(
        replace(base, state="dead", attempts=1, last_status=400, last_error="rejected: HTTP 400")
    )
    assert (dead["deadAt"], dead["lastStatus"], dead["lastError"], dead["nextAttemptAt"]) == (
        iso(T0),
        400,
        "rejected: HTTP 400",
        None,
    )
    assert delivery_status(replace(base, state="delivering"))["nextAttemptAt"] is None


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            DeliveryResult("rejected", 500, b"", f"SOAP Fault Client: INSZ {SECRET}", 1.0),
            "rejected: HTTP 500, SOAP Fault Client",
        ),
        (
            DeliveryResult("failed", 500, b"", f"SOAP Fault Server.Busy: {SECRET}", 1.0),
            "failed: HTTP 500, SOAP Fault Server.Busy",
        ),
        (
            DeliveryResult("failed", 200, b"", f"malformed reply: {SECRET}", 1.0),
            "failed: HTTP 200, malformed reply",
        ),
        (
            DeliveryResult("rejected", 422, b"", f"HTTP 422 Unprocessable: {SECRET}", 1.0),
            "rejected: HTTP 422",
        ),
        (DeliveryResult("failed", None, b"", "timeout: ReadTimeout", 1.0), "failed: timeout"),
    ],
)
def test_last_error_is_in_the_hubs_words(answer: DeliveryResult, reason: str) -> None:
    assert _reason(answer) == reason


def test_migration_4_gives_older_deliveries_their_case(tmp_path: Path) -> None:
    """A store of version 3 with a delivery in flight: after the upgrade the row knows its
    case (so the claim keeps its order) and nothing else of it changed."""
    database = tmp_path / "guichet.db"
    conn = sqlite3.connect(database)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
    for version, script in migrations()[:3]:
        for statement in statements(script):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (version,))
    conn.execute(
        "INSERT INTO messages VALUES ('m9', 'be-platform', 't', 'SP-7', 't', NULL, ?, ?, 0, '{}')",
        (iso(T0), "b" * 64),
    )
    conn.execute(
        "INSERT INTO deliveries (message_id, receiver, state, payload_sha256, content_type,"
        " attempts, next_attempt_at) VALUES ('m9', 'be-vlg-wse', 'retrying', ?, 'x', 2, ?)",
        (BODY_SHA, iso(T0)),
    )
    conn.commit()
    conn.close()
    store = SqliteStore(database)
    try:
        (row,) = store.deliveries("m9")
        assert (row.subject, row.state, row.attempts) == ("SP-7", "retrying", 2)
        assert (row.discard_reason, row.discarded_at) == (None, None)
    finally:
        store.close()
