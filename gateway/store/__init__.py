"""Stores: one interface, one migration history; SQLite (WAL) is the embedded default.

Every write runs as a *unit of work* inside one transaction on the store's single writer; writes
submitted together are committed together (group commit), each in its own savepoint, so one
failing unit never takes the others down and never leaves half its rows behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gateway.errors import StoreError

if TYPE_CHECKING:
    from gateway.payloads import Keyring
    from gateway.store.sql import SqlStore

__all__ = [
    "DeliveryRow",
    "LeafRow",
    "MessageRow",
    "Store",
    "UnitOfWork",
    "default_url",
    "open_store",
    "sqlite_path",
]

T = TypeVar("T")


@dataclass(frozen=True)
class MessageRow:
    id: str
    sender: str
    type: str
    subject: str
    trace_id: str
    correlation_id: str | None
    received_at: str
    body_sha256: str
    leaf_index: int
    receipt: str


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    message_id: str
    receiver: str
    state: str
    payload_sha256: str
    content_type: str
    attempts: int
    next_attempt_at: str
    last_status: int | None
    last_error: str | None
    delivered_at: str | None
    subject: str | None = None  # the message's case (store version 4)
    discard_reason: str | None = None  # the operator's, when discarded
    discarded_at: str | None = None


@dataclass(frozen=True)
class LeafRow:
    leaf_index: int
    leaf_hash: bytes
    record: bytes
    signed_at: str
    key_id: str
    signature: str


class UnitOfWork(Protocol):
    """The writes (and the reads they depend on) of one transaction: the store's only writer
    at that moment (on PostgreSQL, among every replica's), so its reads see every commit."""

    def next_leaf_index(self) -> int: ...
    def append_leaf(self, leaf: LeafRow) -> None: ...
    def message(self, message_id: str) -> MessageRow | None: ...
    def insert_message(self, row: MessageRow) -> None: ...
    def put_payload(self, sha256: str, content: bytes) -> None: ...
    def add_delivery(
        self, message_id: str, receiver: str, payload_sha256: str, content_type: str, now: str
    ) -> None: ...
    def claim_deliveries(
        self, now: str, lease_until: str, limit: int, *, exclude: Sequence[str] = ()
    ) -> list[DeliveryRow]:
        """Claim up to ``limit`` due rows (and rows whose lease ran out), oldest first: none to
        a receiver in ``exclude`` (its circuit is open), none while an earlier delivery of its
        case to its receiver is pending, delivering or retrying."""
        ...

    def finish_delivery(
        self,
        delivery_id: int,
        attempt: int,
        state: str,
        *,
        status: int | None,
        error: str | None,
        next_attempt_at: str,
        delivered_at: str | None,
    ) -> bool:
        """Record an outcome if the row is still this attempt's claim; False if it is not."""
        ...

    # the operator's dead letters: only a dead row changes; False if it was not dead
    def delivery(self, delivery_id: int) -> DeliveryRow | None: ...
    def requeue_delivery(self, delivery_id: int, now: str) -> bool:
        """A dead row back to pending, due ``now``, its attempts kept."""
        ...

    def discard_delivery(self, delivery_id: int, reason: str, now: str) -> bool:
        """A dead row set aside (``discarded``), with the reason and the time."""
        ...

    def touch_case(
        self, subject: str, parties: list[str], region: str | None, now: str
    ) -> None: ...
    def put_artefact(self, sha256: str, path: str, content: bytes) -> None: ...
    def add_checkpoint(
        self, tree_size: int, root_hash: str, time: str, key_id: str, signature: str
    ) -> None: ...
    # checkpoint timestamps (RFC 3161)
    def queue_timestamp(self, tree_size: int, now: str) -> None: ...
    def queue_unstamped_checkpoints(self, now: str) -> int: ...
    def timestamp_granted(
        self, tree_size: int, tsa_url: str, token: bytes, gen_time: str, now: str
    ) -> None: ...
    def timestamp_failed(self, tree_size: int, error: str, next_attempt_at: str) -> None: ...
    def timestamps_due_now(self, now: str) -> None: ...

    # -- payload store: bodies encrypted at rest (gateway/payloads.py) ----------------------------
    def leaves(self, start: int = 0, end: int | None = None) -> list[LeafRow]: ...
    def purge_payloads(self, digests: list[str], time: str, leaf_index: int) -> list[str]:
        """Destroy the wrapped keys and ciphertexts of ``digests`` (those still kept), marking
        each purged by the record at ``leaf_index``; the digests actually purged, in order."""
        ...


class Store(Protocol):
    def write(self, work: Callable[[UnitOfWork], T]) -> T: ...
    async def write_async(self, work: Callable[[UnitOfWork], T]) -> T: ...
    def message(self, message_id: str) -> MessageRow | None: ...
    def messages_for_subject(self, subject: str) -> list[MessageRow]: ...
    def deliveries(self, message_id: str) -> list[DeliveryRow]: ...
    def list_deliveries(
        self, state: str | None, receiver: str | None, limit: int
    ) -> list[DeliveryRow]:
        """Deliveries in ``state`` to ``receiver`` (None: any), newest first, at most ``limit``."""
        ...

    def outbox_depth(self) -> int: ...
    def payload(self, sha256: str) -> bytes | None:
        """The body of that digest, decrypted and checked; None if never kept. Raises
        ``PayloadPurgedError`` (payload.purged) for a body erased past retention, and
        ``PayloadError`` for one that fails authentication or whose master key is missing."""
        ...

    def case(self, subject: str) -> tuple[str | None, list[str]] | None: ...
    def leaves(self, start: int = 0, end: int | None = None) -> list[LeafRow]: ...
    def checkpoints(self) -> list[dict[str, Any]]: ...
    # checkpoint timestamps (RFC 3161)
    def timestamps_due(self, now: str, limit: int) -> list[dict[str, Any]]: ...
    def timestamp_queue(self) -> tuple[int, str | None]: ...
    def newest_checkpoint_unqueued(self) -> bool: ...
    def timestamps(self) -> list[dict[str, Any]]: ...
    def ping(self) -> None: ...
    def lead(self) -> bool:
        """Whether this process is the sequencer: of hub replicas sharing the store, the one
        that checkpoints the log and has the checkpoints timestamped."""
        ...

    # replay: the bytes of a schema, mapping or parties file the hub loaded, by SHA-256
    def artefact(self, sha256: str) -> bytes | None: ...
    def close(self) -> None: ...

    # -- evidence log reads for proofs (the auditor's API) --------------------------------------
    def leaf_count(self) -> int:
        """The number of leaves in the log (its current tree size)."""
        ...

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """The leaf hashes of indices start..end-1, in order (hashes only, not records)."""
        ...

    def leaf(self, index: int) -> LeafRow | None: ...
    def latest_checkpoint(self) -> dict[str, Any] | None: ...
    def checkpoint(self, tree_size: int) -> dict[str, Any] | None: ...

    # -- payload store ----------------------------------------------------------------------------
    def payload_digests(self) -> list[str]:
        """The digests of the bodies kept (not purged)."""
        ...


def default_url(data_dir: Path) -> str:
    """The store of a data dir when none is configured: the embedded SQLite file."""
    return f"sqlite://{(data_dir / 'guichet.db').resolve().as_posix()}"  # sqlite:///abs/path


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store address (``sqlite:///path`` or a bare path); None for
    another engine's."""
    if url.startswith(("postgresql:", "postgres:")):
        return None
    if url.startswith("sqlite:"):
        rest = url.removeprefix("sqlite:")
        return Path(rest[2:] if rest.startswith("//") else rest)
    if "://" in url:
        raise StoreError(
            f"unknown store {url.split('://', 1)[0]!r}: use sqlite:///path or postgresql://…",
            code="store.not-found",
        )
    return Path(url)


def open_store(url: str | None, data_dir: Path, keyring: Keyring | None = None) -> SqlStore:
    """The store at ``url`` (``sqlite:///path``, ``postgresql://…``; default: the data dir's
    SQLite file), migrated to the current version; ``keyring`` reads and keeps bodies."""
    url = url or default_url(data_dir)
    path = sqlite_path(url)
    if path is None:
        from gateway.store.postgres import PostgresStore

        return PostgresStore(url, keyring)
    from gateway.store.sqlite import SqliteStore

    return SqliteStore(path, keyring)
