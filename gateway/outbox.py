"""The outbox worker: claims due deliveries, hands them to the receiver's adapter, seals
the outcome.

At least once: a row is claimed under a lease; a worker that dies leaves the lease to expire and
the row is claimed again. Retryable failures back off exponentially (no sooner than a receiver's
``Retry-After``) up to the receiver's ``max_attempts`` and ``max_age_s``; a receiver's permanent
refusal (4xx, SOAP Client fault) goes straight to dead letter. A receiver failing again and again
has its circuit opened (:class:`CircuitBreaker`): its rows wait, unclaimed, for a cooldown. The
messages of one case reach a receiver in the order the hub accepted them (the store's claim).
The operator requeues or discards dead letters (:func:`requeue`, :func:`discard`), each action
sealed as evidence. docs/delivery.md tells the whole of it.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog

from adapters import Adapter, DeliveryResult, Outbound
from gateway import evidence
from gateway.config import DeliveryOverrides, PartyRegistry, Settings
from gateway.errors import NotFoundError, OutboxError, PayloadError
from gateway.evidence import HubSigner
from gateway.store import DeliveryRow, Store, UnitOfWork

__all__ = [
    "DELIVERY_STATES",
    "CircuitBreaker",
    "Outbox",
    "RetryPolicy",
    "check_listing",
    "delivery_entry",
    "delivery_policies",
    "delivery_status",
    "discard",
    "requeue",
]

log = structlog.get_logger("guichet.outbox")

# pending → delivering → delivered | retrying (→ delivering …) | dead; dead → pending (requeued)
# or discarded (by the operator). Nothing is ever deleted.
DELIVERY_STATES = ("pending", "delivering", "delivered", "retrying", "dead", "discarded")


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


_FAULT_CODE = re.compile(r"SOAP Fault ([A-Za-z][A-Za-z0-9.]{0,40})")


def _reason(result: DeliveryResult) -> str:
    """A short reason in the hub's own words (never the receiver's text, which may quote the
    message back): the outcome, the HTTP status, a SOAP fault's code, or the kind of failure."""
    if result.outcome == "delivered":
        return "delivered"
    if result.status is None:  # no answer: the adapter's own words ("timeout", "transport" …)
        return f"{result.outcome}: {result.detail.split(':', 1)[0][:60]}"
    words = [f"HTTP {result.status}"]
    fault = _FAULT_CODE.match(result.detail)
    if fault:
        words.append(f"SOAP Fault {fault[1]}")
    elif result.detail.startswith("malformed reply"):
        words.append("malformed reply")
    return f"{result.outcome}: {', '.join(words)}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RetryPolicy:
    """How the hub delivers to one receiver.

    When to try again: capped exponential backoff with jitter, never sooner than the receiver's
    ``Retry-After`` (itself capped at ``backoff_cap_s``), for at most ``max_attempts`` attempts
    and ``max_age_s`` seconds from acceptance (then the delivery is dead-lettered); no attempt is
    put off past that age. ``timeout_s`` is the adapter's; a claim's lease must outlast one
    delivery, so it is at least four timeouts. The receiver's circuit opens after
    ``circuit_failures`` retryable failures in a row, for ``circuit_cooldown_s`` (doubled on each
    failed probe, up to ``circuit_cooldown_cap_s``).
    """

    max_attempts: int = 100
    max_age_s: float = 48 * 3600.0
    backoff_s: float = 0.5
    backoff_cap_s: float = 900.0
    jitter: float = 0.2
    lease_s: float = 120.0
    timeout_s: float = 10.0
    circuit_failures: int = 5
    circuit_cooldown_s: float = 30.0
    circuit_cooldown_cap_s: float = 600.0

    @classmethod
    def configured(
        cls, settings: Settings, overrides: DeliveryOverrides | None = None
    ) -> RetryPolicy:
        """A receiver's policy: its ``[parties.<id>.delivery]`` values, else the settings'; the
        lease of a claim is ``delivery_lease_s``, never shorter than four of the adapter's
        timeouts (a claim outlasts the delivery it covers)."""
        values = (overrides or DeliveryOverrides()).resolve(settings)
        return cls(lease_s=max(settings.delivery_lease_s, 4 * values["timeout_s"]), **values)

    def next_attempt(
        self,
        attempts: int,
        now: datetime,
        *,
        retry_after_s: float | None = None,
        accepted_at: datetime | None = None,
    ) -> datetime:
        delay = min(self.backoff_cap_s, self.backoff_s * 2 ** max(attempts - 1, 0))
        # Jitter spreads the retries of many messages to one receiver that comes back.
        delay *= 1 + random.uniform(-self.jitter, self.jitter)  # noqa: S311 - not crypto
        delay = min(delay, self.backoff_cap_s)
        if retry_after_s is not None:  # the receiver said when: no sooner
            delay = max(delay, min(retry_after_s, self.backoff_cap_s))
        at = now + timedelta(seconds=delay)
        if accepted_at is not None:  # the last attempt is made at the deadline, not after it
            at = max(now, min(at, accepted_at + timedelta(seconds=self.max_age_s)))
        return at

    def exhausted(self, attempts: int, accepted_at: datetime, now: datetime) -> bool:
        too_old = (now - accepted_at).total_seconds() >= self.max_age_s
        return attempts >= self.max_attempts or too_old


def delivery_policies(settings: Settings, parties: PartyRegistry) -> dict[str, RetryPolicy]:
    """Each receiver's delivery policy: its ``[parties.<id>.delivery]``, else the settings'."""
    return {
        party.id: RetryPolicy.configured(settings, party.delivery)
        for party in parties.parties.values()
    }


# -- circuit breaker ------------------------------------------------------------------------------

Verdict = Literal["up", "down", "neither"]


def verdict(result: DeliveryResult) -> Verdict:
    """What a result says of the receiver: it answered (delivered, or refused the message), it
    failed (a retryable failure), or nothing (the hub had nothing it could send)."""
    if result.outcome == "failed":
        return "down"
    if result.outcome == "delivered" or result.status is not None:
        return "up"
    return "neither"


@dataclass
class _Circuit:
    failures: int = 0  # retryable failures in a row
    state: Literal["closed", "open", "half-open"] = "closed"
    until: datetime | None = None  # open: no claim before this
    cooldown_s: float = 0.0  # the current cooldown (doubled on each failed probe)
    probing: bool = False  # half-open: the one probe is in hand


@dataclass
class CircuitBreaker:
    """One circuit per receiver, in this process (each hub replica keeps its own).

    closed → (``circuit_failures`` retryable failures in a row) → open: the receiver's rows are
    not claimed for the cooldown → half-open: one row is claimed, the probe → its success closes
    the circuit, its failure opens it again for twice the cooldown (up to the cap). Any answer of
    the receiver (delivered, or a permanent refusal) counts as a success.
    """

    policy_of: Callable[[str], RetryPolicy]
    on_change: Callable[[str, bool], None] | None = None  # (receiver, open)
    _circuits: dict[str, _Circuit] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self, receiver: str, now: datetime) -> str:
        with self._lock:
            return self._advance(receiver, now).state

    def excluded(self, now: datetime) -> list[str]:
        """Receivers whose rows must not be claimed now: open, or half-open with its probe in
        hand (an open circuit whose cooldown is over turns half-open here)."""
        with self._lock:
            return sorted(
                receiver
                for receiver in list(self._circuits)
                if self._advance(receiver, now).state == "open" or self._circuits[receiver].probing
            )

    def claimed(self, receiver: str) -> bool:
        """A row of ``receiver`` was claimed; True when it is the half-open circuit's probe."""
        with self._lock:
            circuit = self._circuits.get(receiver)
            if circuit is None or circuit.state != "half-open":
                return False
            circuit.probing = True
            return True

    def record(self, receiver: str, seen: Verdict, now: datetime, *, probe: bool) -> None:
        policy = self.policy_of(receiver)
        with self._lock:
            circuit = self._circuits.setdefault(receiver, _Circuit())
            if probe:
                circuit.probing = False
            if seen == "up":
                was = circuit.state
                self._circuits[receiver] = _Circuit()
                if was != "closed":
                    log.info("circuit.closed", receiver=receiver)
                    self._notify(receiver, False)
            elif seen == "down":
                circuit.failures += 1
                if probe:
                    # Twice the last cooldown (the configured one if the circuit was reset
                    # while its probe was out), up to the cap.
                    last = circuit.cooldown_s or policy.circuit_cooldown_s
                    cooldown = min(policy.circuit_cooldown_cap_s, last * 2)
                    self._open(receiver, circuit, cooldown, now)
                elif circuit.state == "closed" and circuit.failures >= policy.circuit_failures:
                    self._open(receiver, circuit, policy.circuit_cooldown_s, now)

    def _open(self, receiver: str, circuit: _Circuit, cooldown_s: float, now: datetime) -> None:
        circuit.state, circuit.cooldown_s = "open", cooldown_s
        circuit.until = now + timedelta(seconds=cooldown_s)
        log.warning(
            "circuit.open", receiver=receiver, failures=circuit.failures, cooldown_s=cooldown_s
        )
        self._notify(receiver, True)

    def _advance(self, receiver: str, now: datetime) -> _Circuit:
        circuit = self._circuits.setdefault(receiver, _Circuit())
        if circuit.state == "open" and circuit.until is not None and now >= circuit.until:
            circuit.state = "half-open"
            log.info("circuit.half-open", receiver=receiver)
        return circuit

    def _notify(self, receiver: str, is_open: bool) -> None:
        if self.on_change is not None:
            self.on_change(receiver, is_open)


class Outbox:
    """Delivery workers (threads) over the store's deliveries table.

    ``policy`` is the default; ``policies`` the receivers' own (``[parties.<id>.delivery]``).
    ``on_circuit(receiver, open)`` hears each change of a receiver's circuit (the metrics).
    """

    def __init__(
        self,
        store: Store,
        adapters: Mapping[str, Adapter],
        signer: HubSigner,
        policy: RetryPolicy,
        *,
        policies: Mapping[str, RetryPolicy] | None = None,
        workers: int = 2,
        clock: Callable[[], datetime] = utc_now,
        on_outcome: Callable[[str, str], None] | None = None,
        on_circuit: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.signer = signer
        self.policy = policy
        self.policies = dict(policies or {})
        self.clock = clock
        self.on_outcome = on_outcome
        self.breaker = CircuitBreaker(self.policy_of, on_circuit)
        self._claiming = threading.Lock()  # a half-open circuit lets exactly one probe through
        # One permit per wake, at most one per worker: an accepted message wakes one idle worker
        # (not all of them, each to claim nothing but one).
        self._wake = threading.BoundedSemaphore(max(workers, 1))
        while self._wake.acquire(blocking=False):
            pass
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, name=f"guichet-outbox-{i}", daemon=True)
            for i in range(workers)
        ]

    def policy_of(self, receiver: str) -> RetryPolicy:
        return self.policies.get(receiver, self.policy)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        with contextlib.suppress(ValueError):  # every worker has a permit already
            self._wake.release()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; finish the deliveries in hand (their leases cover a crash)."""
        self._stop.set()
        for _ in self._threads:
            self.wake()
        for thread in self._threads:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception:  # the loop must outlive any one failure
                log.exception("outbox.error")
                worked = 0
            if not worked:
                self._wake.acquire(timeout=0.25)

    def run_once(self, limit: int = 1) -> int:
        """Claim and deliver up to ``limit`` rows, one at a time (a lease covers one delivery,
        so a slow receiver never lets the lease of rows still waiting in hand run out)."""
        done = 0
        while done < limit:
            claim = self._claim()
            if claim is None:
                break
            row, probe = claim
            verdict_seen: Verdict = "neither"
            try:
                verdict_seen = self._deliver(row)
            finally:  # a probe that raised still frees the half-open circuit
                self.breaker.record(row.receiver, verdict_seen, self.clock(), probe=probe)
            done += 1
        return done

    def _claim(self) -> tuple[DeliveryRow, bool] | None:
        """The next due row (none of an open circuit, none behind an earlier delivery of its
        case to its receiver), and whether it is its circuit's probe."""
        with self._claiming:
            now = self.clock()
            exclude = self.breaker.excluded(now)
            # The longest lease of all: the claim does not know the receiver yet.
            lease_s = max([self.policy.lease_s, *(p.lease_s for p in self.policies.values())])
            lease = iso(now + timedelta(seconds=lease_s))
            claimed = self.store.write(
                lambda unit: unit.claim_deliveries(iso(now), lease, 1, exclude=exclude)
            )
            if not claimed:
                return None
            return claimed[0], self.breaker.claimed(claimed[0].receiver)

    def _deliver(self, row: DeliveryRow) -> Verdict:
        policy = self.policy_of(row.receiver)
        message = self.store.message(row.message_id)
        try:
            body = self.store.payload(row.payload_sha256)
            unreadable = None
        except PayloadError as exc:  # purged, or failing authentication: nothing to send
            body, unreadable = None, exc.code
        adapter = self.adapters.get(row.receiver)
        if message is None or body is None or adapter is None:
            why = "no payload or adapter for it"
            if unreadable:
                why = f"payload unreadable ({unreadable})"
            result = DeliveryResult("rejected", None, b"", why, 0.0)
        else:
            outbound = Outbound(
                message_id=row.message_id,
                message_type=message.type,
                receiver=row.receiver,
                body=body,
                content_type=row.content_type,
                trace_id=message.trace_id,
                attempt=row.attempts,
            )
            try:
                result = adapter.deliver(outbound)
            except Exception as exc:  # noqa: BLE001 - an adapter's fault is a failed attempt
                log.warning(
                    "delivery.adapter-error", receiver=row.receiver, error_type=type(exc).__name__
                )
                result = DeliveryResult("failed", None, b"", f"adapter {type(exc).__name__}", 0.0)
        now = self.clock()
        accepted_at = _parse(message.received_at) if message else now
        if result.outcome == "delivered":
            state, event = "delivered", "delivery.delivered"
        elif result.outcome == "failed" and not policy.exhausted(row.attempts, accepted_at, now):
            state, event = "retrying", "delivery.failed"
        else:
            state, event = "dead", "delivery.dead"
        # A finished row keeps when it finished as its next_attempt_at (nothing is due then).
        next_at = (
            policy.next_attempt(
                row.attempts, now, retry_after_s=result.retry_after_s, accepted_at=accepted_at
            )
            if state == "retrying"
            else now
        )
        # What a receiver answered may quote the message back (names, national numbers): the
        # evidence and the status keep the status and outcome only; the answer itself is kept
        # by its digest, beside the log, like every payload.
        reason = _reason(result)
        leaf = evidence.Leaf.of(
            evidence.record(
                event,
                iso(now),
                messageId=row.message_id,
                receiver=row.receiver,
                attempt=row.attempts,
                traceId=message.trace_id if message else None,
                status=result.status,
                reason=reason,
                response={"sha256": evidence.digest(result.response)} if result.response else None,
                retryAfter=_seconds(result.retry_after_s) if state == "retrying" else None,
                nextAttemptAt=iso(next_at) if state == "retrying" else None,
            )
        )

        def work(unit: UnitOfWork) -> bool:
            # Only the worker that holds the claim finishes it: one whose lease ran out (and
            # whose row another worker took) leaves no outcome and no evidence.
            if not unit.finish_delivery(
                row.id,
                row.attempts,
                state,
                status=result.status,
                error=None if state == "delivered" else reason,
                next_attempt_at=iso(next_at),
                delivered_at=iso(now) if state == "delivered" else None,
            ):
                return False
            if result.response:
                unit.put_payload(evidence.digest(result.response), result.response)
            evidence.append(unit, self.signer, leaf, iso(now))
            return True

        if self.store.write(work) and self.on_outcome is not None:
            self.on_outcome(row.receiver, state)
        return verdict(result)


def _seconds(value: float | None) -> int | None:
    """A Retry-After for the evidence, in whole seconds (rounded up, as a receiver means it)."""
    return None if value is None else math.ceil(value)


# -- the operator's actions on dead letters -------------------------------------------------------

MAX_REASON = 500


def requeue(
    store: Store,
    signer: HubSigner,
    delivery_id: int,
    *,
    by: Mapping[str, str],
    reason: str | None = None,
    now: datetime | None = None,
) -> DeliveryRow:
    """A dead delivery back to ``pending``, due now, its attempts kept; sealed as
    ``delivery.requeued``. ``OutboxError``: ``outbox.not-found``, ``outbox.not-dead``."""
    return _operate(store, signer, delivery_id, "requeued", by, reason, now)


def discard(
    store: Store,
    signer: HubSigner,
    delivery_id: int,
    *,
    by: Mapping[str, str],
    reason: str,
    now: datetime | None = None,
) -> DeliveryRow:
    """A dead delivery set aside for good (``discarded``, the reason kept); sealed as
    ``delivery.discarded``. Nothing is deleted. ``OutboxError`` as :func:`requeue`."""
    if not reason or not reason.strip():
        raise OutboxError("discarding a dead letter needs a reason", code="outbox.invalid")
    return _operate(store, signer, delivery_id, "discarded", by, reason, now)


def _operate(
    store: Store,
    signer: HubSigner,
    delivery_id: int,
    action: Literal["requeued", "discarded"],
    by: Mapping[str, str],
    reason: str | None,
    now: datetime | None,
) -> DeliveryRow:
    reason = reason.strip() if reason else None
    if reason is not None and len(reason) > MAX_REASON:
        raise OutboxError(f"a reason has at most {MAX_REASON} characters", code="outbox.invalid")
    time = iso(now or utc_now())

    def work(unit: UnitOfWork) -> DeliveryRow:
        row = unit.delivery(delivery_id)
        if row is None:
            raise NotFoundError(f"no delivery {delivery_id}", code="outbox.not-found")
        if row.state != "dead":
            raise OutboxError(
                f"delivery {delivery_id} is {row.state}: only a dead letter may be {action}",
                code="outbox.not-dead",
                extra={"state": row.state},
            )
        if action == "requeued":
            changed = unit.requeue_delivery(delivery_id, time)
        else:
            changed = unit.discard_delivery(delivery_id, reason or "", time)
        if not changed:  # cannot happen under the store's write lock; never sealed if it did
            raise OutboxError(
                f"delivery {delivery_id} changed while being {action}", code="outbox.not-dead"
            )
        leaf = evidence.Leaf.of(
            evidence.record(
                f"delivery.{action}",
                time,
                deliveryId=delivery_id,
                messageId=row.message_id,
                receiver=row.receiver,
                attempts=row.attempts,
                lastStatus=row.last_status,
                reason=reason,
                by=dict(by),
            )
        )
        evidence.append(unit, signer, leaf, time)
        after = unit.delivery(delivery_id)
        assert after is not None
        return after

    done = store.write(work)
    event = "delivery.requeued" if action == "requeued" else "delivery.discarded"
    log.info(event, delivery_id=delivery_id, receiver=done.receiver)
    return done


# -- status -------------------------------------------------------------------------------------


def delivery_status(row: DeliveryRow) -> dict[str, Any]:
    """A delivery as the status API shows it: the fields that mean something in its state.

    pending, delivering: attempts (and when a pending one is due); delivered: deliveredAt;
    retrying: nextAttemptAt and why the last attempt failed; dead: why (lastStatus, lastError);
    discarded: the operator's reason and when.
    """
    state = row.state
    why = state in ("retrying", "dead", "discarded")
    return {
        "receiver": row.receiver,
        "state": state,
        "attempts": row.attempts,
        "deliveredAt": row.delivered_at if state == "delivered" else None,
        "nextAttemptAt": row.next_attempt_at if state in ("pending", "retrying") else None,
        "deadAt": row.next_attempt_at if state == "dead" else None,
        "lastStatus": row.last_status if why else None,
        "lastError": row.last_error if why else None,
        "discardedAt": row.discarded_at if state == "discarded" else None,
        "reason": row.discard_reason if state == "discarded" else None,
    }


def delivery_entry(row: DeliveryRow) -> dict[str, Any]:
    """A delivery as the operator lists it: its ids, its case, and its status."""
    return {
        "id": row.id,
        "messageId": row.message_id,
        "subject": row.subject,
        **delivery_status(row),
    }


MAX_LISTING = 1000


def check_listing(state: str | None, limit: int | str | None) -> int:
    """Check a listing's filters; the limit as a number (default 100, at most 1000).
    ``OutboxError`` (``outbox.invalid``) for an unknown state or a bad limit."""
    if state is not None and state not in DELIVERY_STATES:
        raise OutboxError(
            f"unknown state {state!r}: one of {', '.join(DELIVERY_STATES)}", code="outbox.invalid"
        )
    if limit is None:
        return 100
    try:
        number = int(limit)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_LISTING:
        raise OutboxError(f"limit must be 1 to {MAX_LISTING}", code="outbox.invalid")
    return number
