"""The background checkpointer: a signed tree head every N seconds or every M new records.

It runs on a thread of its own and never on the request path: it reads the new leaves through
the store's read connection, keeps the log's right frontier (the roots of its perfect subtrees,
RFC 6962 §2.1), so each leaf is hashed into the tree once, and hands a one-row unit to the
store's writer (group-committed with whatever else is queued). When timestamping authorities are
configured, the checkpoint is queued for a token in the same transaction
(``gateway.timestamps``). Checkpoints are kept forever.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway import evidence
from gateway.config import Settings
from gateway.evidence import Checkpoint, HubSigner
from gateway.outbox import iso, utc_now
from gateway.store import Store, UnitOfWork
from gateway.timestamps import Timestamper, TimestampMetrics

__all__ = ["Checkpointer", "Checkpointing", "Frontier"]

log = structlog.get_logger("guichet.checkpoints")

_READ_CHUNK = 10_000


@dataclass
class Frontier:
    """The roots of the perfect subtrees of an RFC 6962 tree, largest first: append is O(log n),
    the root of the whole tree O(log n), equal to ``evidence.merkle_root`` of all leaves."""

    size: int = 0
    nodes: list[bytes] = field(default_factory=list)

    def append(self, leaf_hash: bytes) -> None:
        node = leaf_hash
        size = self.size
        # Each trailing 1 bit of the old size is a perfect subtree of the same height: merge.
        while size & 1:
            node = evidence.node_hash(self.nodes.pop(), node)
            size >>= 1
        self.nodes.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self.nodes:
            return evidence.merkle_root([])
        node = self.nodes[-1]
        for left in reversed(self.nodes[:-1]):
            node = evidence.node_hash(left, node)
        return node


class Checkpointer:
    """Signs and keeps a checkpoint when ``every_records`` new leaves or ``interval_s`` seconds
    (with at least one new leaf) have passed since the last one; 0 turns a trigger off."""

    def __init__(
        self,
        store: Store,
        signer: HubSigner,
        registry: CollectorRegistry,
        *,
        interval_s: float,
        every_records: int,
        timestamped: bool,
        on_checkpoint: list[threading.Event] | None = None,
    ) -> None:
        self.store = store
        self.signer = signer
        self.interval_s = interval_s
        self.every_records = every_records
        self.timestamped = timestamped
        self.on_checkpoint = on_checkpoint or []
        self.frontier = Frontier()
        self.last_size = 0
        self._last_at = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="guichet-checkpoints", daemon=True)
        self.made = Counter(
            "guichet_checkpoints", "Signed checkpoints made by the hub", registry=registry
        )
        self.tree_size = Gauge(
            "guichet_checkpoint_tree_size", "Tree size of the last checkpoint", registry=registry
        )
        self.sequencer = Gauge(
            "guichet_sequencer",
            "1 on the replica that checkpoints the shared log (the sequencer), else 0",
            registry=registry,
        )
        self._leading = False

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0 or self.every_records > 0

    def start(self) -> None:
        if self.enabled:
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop; what was appended since the last checkpoint gets one now."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            try:
                self.run_once(final=True)
            except Exception:  # closing must go on
                log.exception("checkpoint.error")

    def _poll_s(self) -> float:
        return 0.05 if not self.interval_s else min(0.05, self.interval_s / 4)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the loop must outlive any one failure
                log.exception("checkpoint.error")
            self._stop.wait(self._poll_s())

    def _catch_up(self) -> None:
        """Hash the leaves appended since the frontier was last brought up to date."""
        if self.frontier.size == 0 and self.last_size == 0:
            known = self.store.checkpoints()
            self.last_size = int(known[-1]["tree_size"]) if known else 0
        while True:
            leaves = self.store.leaves(self.frontier.size, self.frontier.size + _READ_CHUNK)
            for leaf in leaves:
                if leaf.leaf_index != self.frontier.size:
                    raise RuntimeError(f"the log has a gap at leaf {self.frontier.size}")
                self.frontier.append(leaf.leaf_hash)
            if len(leaves) < _READ_CHUNK:
                return

    def run_once(self, *, final: bool = False) -> Checkpoint | None:
        """Catch up with the log; make a checkpoint if one is due (on the sequencer only: of
        replicas sharing a store, the one holding its SEQUENCER lock)."""
        with self._lock:
            if not self._lead():
                return None
            self._catch_up()
            new = self.frontier.size - self.last_size
            if new <= 0:
                return None
            by_count = self.every_records > 0 and new >= self.every_records
            by_time = self.interval_s > 0 and time.monotonic() - self._last_at >= self.interval_s
            if not (by_count or by_time or final):
                return None
            return self._checkpoint()

    def _lead(self) -> bool:
        leading = self.store.lead()
        if leading and not self._leading:
            # Elected (again): another replica may have checkpointed meanwhile; start afresh.
            self.frontier, self.last_size, self._last_at = Frontier(), 0, time.monotonic()
            log.info("sequencer.elected")
        elif self._leading and not leading:
            log.warning("sequencer.lost")
        self._leading = leading
        self.sequencer.set(1 if leading else 0)
        return leading

    def _checkpoint(self) -> Checkpoint:
        size = self.frontier.size
        root = self.frontier.root().hex()
        now = iso(utc_now())
        checkpoint = evidence.sign_checkpoint(self.signer, size, root, now)
        timestamped = self.timestamped

        def work(unit: UnitOfWork) -> None:
            unit.add_checkpoint(
                checkpoint.tree_size,
                checkpoint.root_hash,
                checkpoint.time,
                checkpoint.key_id,
                checkpoint.signature,
            )
            if timestamped:
                unit.queue_timestamp(checkpoint.tree_size, now)

        self.store.write(work)
        self.last_size = size
        self._last_at = time.monotonic()
        self.made.inc()
        self.tree_size.set(size)
        log.info("checkpoint.signed", tree_size=size, root_hash=root)
        for event in self.on_checkpoint:
            event.set()
        return checkpoint


class Checkpointing:
    """The hub's background evidence workers: the checkpointer and, when authorities are
    configured, the timestamper. Built with the hub; threads run between start() and stop()."""

    def __init__(
        self, store: Store, signer: HubSigner, settings: Settings, registry: CollectorRegistry
    ) -> None:
        self.timestamper: Timestamper | None = None
        wake: list[threading.Event] = []
        if settings.tsa_urls:
            self.timestamper = Timestamper(
                store,
                settings.tsa_urls,
                TimestampMetrics(registry, store),
                timeout_s=settings.tsa_timeout_s,
                backoff_s=settings.tsa_backoff_s,
                backoff_cap_s=settings.tsa_backoff_cap_s,
            )
            wake.append(self.timestamper.wake_event)
        self.checkpointer = Checkpointer(
            store,
            signer,
            registry,
            interval_s=settings.checkpoint_interval_s,
            every_records=settings.checkpoint_every_records,
            timestamped=self.timestamper is not None,
            on_checkpoint=wake,
        )

    def start(self) -> None:
        self.checkpointer.start()
        if self.timestamper is not None:
            self.timestamper.start()

    def stop(self) -> None:
        """Before the store closes: the last checkpoint, then the timestamper (its queue stays
        in the store and is taken up again at the next start)."""
        self.checkpointer.stop()
        if self.timestamper is not None:
            self.timestamper.stop()
