"""The outbox worker: claims due deliveries, hands them to the receiver's adapter, seals
the outcome.

At least once: a row is claimed under a lease; a worker that dies leaves the lease to expire and
the row is claimed again. Retryable failures back off exponentially up to ``max_attempts``; a
receiver's permanent refusal (4xx, SOAP Client fault) goes straight to dead letter.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from adapters import Adapter, DeliveryResult, Outbound
from gateway import evidence
from gateway.errors import PayloadError
from gateway.evidence import HubSigner
from gateway.store import DeliveryRow, Store, UnitOfWork

__all__ = ["Outbox", "RetryPolicy"]

log = structlog.get_logger("guichet.outbox")


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def _reason(result: DeliveryResult) -> str:
    """A short reason of our own words (never the receiver's text)."""
    if result.outcome == "delivered":
        return "delivered"
    if result.status is not None:
        return f"{result.outcome}: HTTP {result.status}"
    return f"{result.outcome}: {result.detail.split(':', 1)[0][:60]}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again: capped exponential backoff with jitter, for at most ``max_attempts``
    attempts and ``max_age_s`` seconds from acceptance (then the delivery is dead-lettered).
    A claim's lease must outlast one delivery (adapters time out well before it)."""

    max_attempts: int = 100
    max_age_s: float = 48 * 3600.0
    backoff_s: float = 0.5
    backoff_cap_s: float = 900.0
    jitter: float = 0.2
    lease_s: float = 120.0

    def next_attempt(self, attempts: int, now: datetime) -> datetime:
        delay = min(self.backoff_cap_s, self.backoff_s * 2 ** max(attempts - 1, 0))
        # Jitter spreads the retries of many messages to one receiver that comes back.
        delay *= 1 + random.uniform(-self.jitter, self.jitter)  # noqa: S311 - not crypto
        return now + timedelta(seconds=delay)

    def exhausted(self, attempts: int, accepted_at: datetime, now: datetime) -> bool:
        too_old = (now - accepted_at).total_seconds() >= self.max_age_s
        return attempts >= self.max_attempts or too_old


class Outbox:
    """Delivery workers (threads) over the store's deliveries table."""

    def __init__(
        self,
        store: Store,
        adapters: Mapping[str, Adapter],
        signer: HubSigner,
        policy: RetryPolicy,
        *,
        workers: int = 2,
        clock: Callable[[], datetime] = utc_now,
        on_outcome: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.signer = signer
        self.policy = policy
        self.clock = clock
        self.on_outcome = on_outcome
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, name=f"guichet-outbox-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; finish the deliveries in hand (their leases cover a crash)."""
        self._stop.set()
        self._wake.set()
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
                self._wake.wait(timeout=0.25)
                self._wake.clear()

    def run_once(self, limit: int = 1) -> int:
        """Claim and deliver up to ``limit`` rows (one by default: a lease covers one delivery,
        so a slow receiver never lets the lease of rows still waiting in hand run out)."""
        now = self.clock()
        lease = iso(now + timedelta(seconds=self.policy.lease_s))
        claimed = self.store.write(lambda unit: unit.claim_deliveries(iso(now), lease, limit))
        for row in claimed:
            self._deliver(row)
        return len(claimed)

    def _deliver(self, row: DeliveryRow) -> None:
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
        elif result.outcome == "failed" and not self.policy.exhausted(
            row.attempts, accepted_at, now
        ):
            state, event = "retrying", "delivery.failed"
        else:
            state, event = "dead", "delivery.dead"
        next_at = self.policy.next_attempt(row.attempts, now)
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
