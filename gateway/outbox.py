"""The outbox worker: claims due deliveries, hands them to the receiver's adapter, seals
the outcome.

At least once: a row is claimed under a lease; a worker that dies leaves the lease to expire and
the row is claimed again. Retryable failures back off exponentially up to ``max_attempts``; a
receiver's permanent refusal (4xx, SOAP Client fault) goes straight to dead letter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from adapters import Adapter, DeliveryResult, Outbound
from gateway import evidence
from gateway.evidence import HubSigner
from gateway.pipeline import append_evidence
from gateway.store import DeliveryRow, Store, UnitOfWork

__all__ = ["Outbox", "RetryPolicy"]

log = structlog.get_logger("guichet.outbox")


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_s: float = 0.5
    lease_s: float = 60.0

    def next_attempt(self, attempts: int, now: datetime) -> datetime:
        return now + timedelta(seconds=self.backoff_s * 2 ** max(attempts - 1, 0))


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

    def run_once(self, limit: int = 8) -> int:
        now = self.clock()
        lease = iso(now + timedelta(seconds=self.policy.lease_s))
        claimed = self.store.write(lambda unit: unit.claim_deliveries(iso(now), lease, limit))
        for row in claimed:
            self._deliver(row)
        return len(claimed)

    def _deliver(self, row: DeliveryRow) -> None:
        message = self.store.message(row.message_id)
        body = self.store.payload(row.payload_sha256)
        adapter = self.adapters.get(row.receiver)
        if message is None or body is None or adapter is None:
            result = DeliveryResult("rejected", None, b"", "no payload or adapter for it", 0.0)
        else:
            result = adapter.deliver(
                Outbound(
                    message_id=row.message_id,
                    message_type=message.type,
                    receiver=row.receiver,
                    body=body,
                    content_type=row.content_type,
                    trace_id=message.trace_id,
                    attempt=row.attempts,
                )
            )
        now = self.clock()
        if result.outcome == "delivered":
            state, event = "delivered", "delivery.delivered"
        elif result.outcome == "failed" and row.attempts < self.policy.max_attempts:
            state, event = "retrying", "delivery.failed"
        else:
            state, event = "dead", "delivery.dead"
        next_at = self.policy.next_attempt(row.attempts, now)
        record = evidence.record(
            event,
            iso(now),
            messageId=row.message_id,
            receiver=row.receiver,
            attempt=row.attempts,
            traceId=message.trace_id if message else None,
            status=result.status,
            detail=result.detail[:500] or None,
            response={"sha256": evidence.digest(result.response)} if result.response else None,
            nextAttemptAt=iso(next_at) if state == "retrying" else None,
        )

        def work(unit: UnitOfWork) -> None:
            if result.response:
                unit.put_payload(evidence.digest(result.response), result.response)
            append_evidence(unit, self.signer, record, iso(now))
            unit.finish_delivery(
                row.id,
                state,
                status=result.status,
                error=None if state == "delivered" else result.detail[:500],
                next_attempt_at=iso(next_at),
                delivered_at=iso(now) if state == "delivered" else None,
            )

        self.store.write(work)
        if self.on_outcome is not None:
            self.on_outcome(row.receiver, state)
