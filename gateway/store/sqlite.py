"""The embedded store: SQLite in WAL mode, durable commits, one writer thread with group commit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import queue
import sqlite3
import threading
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from gateway import payloads
from gateway.errors import PayloadError, StoreError
from gateway.payloads import Keyring, SealedPayload
from gateway.store import DeliveryRow, LeafRow, MessageRow

__all__ = ["SqliteStore", "migrations", "read_log", "read_payload"]

T = TypeVar("T")
_MAX_BATCH = 256


def migrations() -> list[tuple[int, str]]:
    """The one migration history: (version, SQL script), in order."""
    folder = resources.files("gateway.store") / "migrations"
    return sorted(
        (int(entry.name.split("_", 1)[0]), entry.read_text())
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk when it returns, so a 202 is never given for a lost message.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    # Deleted content is overwritten with zeros: a purged body's wrapped key leaves no trace.
    conn.execute("PRAGMA secure_delete=ON")
    return conn


class _SqliteUnit:
    """UnitOfWork over the writer connection (inside the batch transaction)."""

    def __init__(self, conn: sqlite3.Connection, keyring: Keyring | None = None) -> None:
        self.conn = conn
        self.keyring = keyring

    def next_leaf_index(self) -> int:
        row = self.conn.execute("SELECT COALESCE(MAX(leaf_index) + 1, 0) FROM evidence").fetchone()
        return int(row[0])

    def append_leaf(self, leaf: LeafRow) -> None:
        self.conn.execute(
            "INSERT INTO evidence (leaf_index, leaf_hash, record, signed_at, key_id, signature)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                leaf.leaf_index,
                leaf.leaf_hash,
                leaf.record,
                leaf.signed_at,
                leaf.key_id,
                leaf.signature,
            ),
        )

    def message(self, message_id: str) -> MessageRow | None:
        return _message(self.conn, message_id)

    def insert_message(self, row: MessageRow) -> None:
        self.conn.execute(
            "INSERT INTO messages (id, sender, type, subject, trace_id, correlation_id,"
            " received_at, body_sha256, leaf_index, receipt) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                row.id,
                row.sender,
                row.type,
                row.subject,
                row.trace_id,
                row.correlation_id,
                row.received_at,
                row.body_sha256,
                row.leaf_index,
                row.receipt,
            ),
        )

    def put_payload(self, sha256: str, content: bytes) -> None:
        """Keep a body encrypted (a body already kept is not encrypted again)."""
        if self.keyring is None:
            raise StoreError("the store was opened without the payload master key")
        kept = self.conn.execute("SELECT 1 FROM payloads WHERE sha256 = ?", (sha256,)).fetchone()
        if kept is not None:
            return
        sealed = payloads.seal_payload(self.keyring, sha256, content)
        _insert_sealed(self.conn, sha256, sealed)

    def add_delivery(
        self, message_id: str, receiver: str, payload_sha256: str, content_type: str, now: str
    ) -> None:
        self.conn.execute(
            "INSERT INTO deliveries (message_id, receiver, state, payload_sha256, content_type,"
            " next_attempt_at) VALUES (?, ?, 'pending', ?, ?, ?)",
            (message_id, receiver, payload_sha256, content_type, now),
        )

    def claim_deliveries(self, now: str, lease_until: str, limit: int) -> list[DeliveryRow]:
        # Due rows, and rows whose lease ran out (a worker died holding them).
        rows = self.conn.execute(_CLAIM, (lease_until, now, now, limit)).fetchall()
        return sorted((_delivery(r) for r in rows), key=lambda d: d.id)

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
        cursor = self.conn.execute(
            "UPDATE deliveries SET state = ?, last_status = ?, last_error = ?,"
            " next_attempt_at = ?, delivered_at = ?, lease_until = NULL"
            " WHERE id = ? AND state = 'delivering' AND attempts = ?",
            (state, status, error, next_attempt_at, delivered_at, delivery_id, attempt),
        )
        return cursor.rowcount == 1

    def touch_case(self, subject: str, parties: list[str], region: str | None, now: str) -> None:
        row = self.conn.execute(
            "SELECT competent_region, parties FROM cases WHERE subject = ?", (subject,)
        ).fetchone()
        if row is None:
            self.conn.execute(
                "INSERT INTO cases (subject, competent_region, parties, created_at)"
                " VALUES (?, ?, ?, ?)",
                (subject, region, json.dumps(sorted(set(parties))), now),
            )
            return
        merged = sorted(set(json.loads(row[1])) | set(parties))
        self.conn.execute(
            "UPDATE cases SET parties = ?, competent_region = COALESCE(competent_region, ?)"
            " WHERE subject = ?",
            (json.dumps(merged), region, subject),
        )

    def put_artefact(self, sha256: str, path: str, content: bytes) -> None:
        self.conn.execute(
            "INSERT INTO artefacts (sha256, path, content) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (sha256, path, content),
        )

    def add_checkpoint(
        self, tree_size: int, root_hash: str, time: str, key_id: str, signature: str
    ) -> None:
        self.conn.execute(
            "INSERT INTO checkpoints (tree_size, root_hash, time, key_id, signature)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (tree_size, root_hash, time, key_id, signature),
        )

    # -- payload store ----------------------------------------------------------------------------
    def leaves(self, start: int = 0, end: int | None = None) -> list[LeafRow]:
        return _leaves(self.conn, start, end)

    def purge_payloads(self, digests: list[str], time: str, leaf_index: int) -> list[str]:
        purged = []
        for sha256 in digests:
            # The key first: once it is gone the body is, whatever becomes of the ciphertext.
            key = self.conn.execute("DELETE FROM payload_keys WHERE sha256 = ?", (sha256,))
            body = self.conn.execute("DELETE FROM payloads WHERE sha256 = ?", (sha256,))
            if key.rowcount or body.rowcount:
                self.conn.execute(
                    "INSERT INTO payload_purges (sha256, purged_at, leaf_index) VALUES (?, ?, ?)"
                    " ON CONFLICT (sha256) DO UPDATE SET purged_at = excluded.purged_at,"
                    " leaf_index = excluded.leaf_index",
                    (sha256, time, leaf_index),
                )
                purged.append(sha256)
        return purged

    # -- checkpoint timestamps (RFC 3161): the queue of checkpoints awaiting a token ---------
    def queue_timestamp(self, tree_size: int, now: str) -> None:
        self.conn.execute(
            "INSERT INTO checkpoint_timestamps (tree_size, queued_at, next_attempt_at)"
            " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (tree_size, now, now),
        )

    def queue_unstamped_checkpoints(self, now: str) -> int:
        """Queue every checkpoint that has no timestamp row yet (made while none was configured,
        or by ``Hub.checkpoint``); the number queued."""
        cursor = self.conn.execute(
            "INSERT INTO checkpoint_timestamps (tree_size, queued_at, next_attempt_at)"
            " SELECT c.tree_size, ?, ? FROM checkpoints c WHERE NOT EXISTS"
            " (SELECT 1 FROM checkpoint_timestamps t WHERE t.tree_size = c.tree_size)",
            (now, now),
        )
        return cursor.rowcount

    def timestamp_granted(
        self, tree_size: int, tsa_url: str, token: bytes, gen_time: str, now: str
    ) -> None:
        self.conn.execute(
            "UPDATE checkpoint_timestamps SET token = ?, tsa_url = ?, gen_time = ?,"
            " stamped_at = ?, attempts = attempts + 1, last_error = NULL"
            " WHERE tree_size = ? AND token IS NULL",
            (token, tsa_url, gen_time, now, tree_size),
        )

    def timestamp_failed(self, tree_size: int, error: str, next_attempt_at: str) -> None:
        self.conn.execute(
            "UPDATE checkpoint_timestamps SET attempts = attempts + 1, last_error = ?,"
            " next_attempt_at = ? WHERE tree_size = ? AND token IS NULL",
            (error, next_attempt_at, tree_size),
        )

    def timestamps_due_now(self, now: str) -> None:
        """Every waiting checkpoint is due at ``now`` (an authority answers again)."""
        self.conn.execute(
            "UPDATE checkpoint_timestamps SET next_attempt_at = ?"
            " WHERE token IS NULL AND next_attempt_at > ?",
            (now, now),
        )


def _insert_sealed(conn: sqlite3.Connection, sha256: str, sealed: SealedPayload) -> None:
    conn.execute(
        "INSERT INTO payloads (sha256, content) VALUES (?, ?)", (sha256, sealed.ciphertext)
    )
    conn.execute(
        "INSERT INTO payload_keys (sha256, key_id, wrapped_key) VALUES (?, ?, ?)",
        (sha256, sealed.key_id, sealed.wrapped_key),
    )


def _payload(conn: sqlite3.Connection, sha256: str, keyring: Keyring | None) -> bytes | None:
    """A kept body, decrypted and checked (see ``Store.payload``)."""
    row = conn.execute(
        "SELECT p.content, k.key_id, k.wrapped_key FROM payloads p"
        " LEFT JOIN payload_keys k ON k.sha256 = p.sha256 WHERE p.sha256 = ?",
        (sha256,),
    ).fetchone()
    if row is None:
        purge = conn.execute(
            "SELECT purged_at, leaf_index FROM payload_purges WHERE sha256 = ?", (sha256,)
        ).fetchone()
        if purge is not None:
            raise payloads.purged_error(sha256, purge[0], purge[1])
        return None
    if row[1] is None:
        raise PayloadError(
            f"payload {sha256} has no data key: it cannot be read (its key was destroyed outside"
            " `guichet audit purge`, or the store has not been opened by the hub since it kept"
            " bodies in clear)",
            code="payload.corrupt",
        )
    if keyring is None:
        raise StoreError("the store was opened without the payload master key")
    sealed = SealedPayload(row[1], bytes(row[2]), bytes(row[0]))
    return payloads.open_payload(keyring, sha256, sealed)


def read_payload(path: Path, sha256: str, keyring: Keyring) -> bytes | None:
    """One body of a store, read-only (an auditor's copy), decrypted with ``keyring``."""
    if not path.is_file():
        raise StoreError(f"no store at {path}", code="store.not-found")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return _payload(conn, sha256, keyring)
    except sqlite3.Error as exc:
        raise StoreError(f"{path} is not a readable store: {exc}", code="store.not-found") from exc
    finally:
        conn.close()


_DELIVERY_COLUMNS = (
    "id, message_id, receiver, state, payload_sha256, content_type, attempts,"
    " next_attempt_at, last_status, last_error, delivered_at"
)


# Due rows, and rows whose lease ran out (a worker died holding them), oldest first.
_CLAIM = (
    "UPDATE deliveries SET state = 'delivering', lease_until = ?, attempts = attempts + 1"  # noqa: S608
    " WHERE id IN (SELECT id FROM deliveries WHERE"
    " (state IN ('pending', 'retrying') AND next_attempt_at <= ?)"
    " OR (state = 'delivering' AND lease_until < ?) ORDER BY id LIMIT ?)"
    f" RETURNING {_DELIVERY_COLUMNS}"
)


def _delivery(row: tuple[Any, ...]) -> DeliveryRow:
    return DeliveryRow(*row)


def _leaves(conn: sqlite3.Connection, start: int = 0, end: int | None = None) -> list[LeafRow]:
    rows = conn.execute(
        "SELECT leaf_index, leaf_hash, record, signed_at, key_id, signature FROM evidence"
        " WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index",
        (start, end if end is not None else 2**62),
    )
    return [LeafRow(r[0], bytes(r[1]), bytes(r[2]), r[3], r[4], r[5]) for r in rows]


def _checkpoints(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT tree_size, root_hash, time, key_id, signature FROM checkpoints ORDER BY tree_size"
    )
    keys = ("tree_size", "root_hash", "time", "key_id", "signature")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def read_log(path: Path) -> tuple[list[LeafRow], list[dict[str, Any]]]:
    """The evidence log of a store, read-only (an auditor's copy is never written to)."""
    if not path.is_file():
        raise StoreError(f"no store at {path}", code="store.not-found")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return _leaves(conn), _checkpoints(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"{path} is not a readable store: {exc}", code="store.not-found") from exc
    finally:
        conn.close()


def _message(conn: sqlite3.Connection, message_id: str) -> MessageRow | None:
    row = conn.execute(
        "SELECT id, sender, type, subject, trace_id, correlation_id, received_at, body_sha256,"
        " leaf_index, receipt FROM messages WHERE id = ?",
        (message_id,),
    ).fetchone()
    return MessageRow(*row) if row else None


_Job = tuple[Callable[[Any], Any], concurrent.futures.Future[Any]]


def _fail(batch: list[_Job], error: StoreError) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)


class SqliteStore:
    """SQLite store. All writes go through one writer thread, batched into shared commits."""

    def __init__(self, path: Path, payload_keys: Keyring | None = None) -> None:
        """``payload_keys``: the master keys that wrap the bodies' data keys; without them the
        store keeps no body and reads none (``guichet audit`` commands need none)."""
        self.path = path
        self.keyring = payload_keys
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_conn = _connect(path)
        self.migrate()
        if payload_keys is not None:
            self._seal_clear_payloads(payload_keys)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="guichet-store-writer", daemon=True)
        self._thread.start()

    # -- schema -----------------------------------------------------------------------------------
    def migrate(self) -> int:
        conn = self._writer_conn
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        applied = 0
        for version, script in migrations():
            if version in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in (s.strip() for s in script.split(";")):
                    if statement:
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, datetime('now'))", (version,)
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            applied += 1
        return applied

    def _seal_clear_payloads(self, keyring: Keyring) -> None:
        """Refuse a master key that is not this store's; encrypt bodies kept in clear before
        version 3 (a one-time upgrade), zeroing their clear bytes."""
        conn = self._writer_conn
        keyring.check_store(
            (r[0] for r in conn.execute("SELECT DISTINCT key_id FROM payload_keys")), str(self.path)
        )
        clear = conn.execute(
            "SELECT sha256 FROM payloads WHERE sha256 NOT IN (SELECT sha256 FROM payload_keys)"
        ).fetchall()
        if not clear:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for (sha256,) in clear:
                content = conn.execute(
                    "SELECT content FROM payloads WHERE sha256 = ?", (sha256,)
                ).fetchone()[0]
                conn.execute("DELETE FROM payloads WHERE sha256 = ?", (sha256,))
                _insert_sealed(conn, sha256, payloads.seal_payload(keyring, sha256, bytes(content)))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.erase_freed()

    def erase_freed(self) -> None:
        """Copy the log of writes into the database and empty it, so that pages from before a
        deletion (a purge) do not linger in the WAL file (best effort while others read)."""
        conn = _connect(self.path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()

    # -- writes -----------------------------------------------------------------------------------
    def write(self, work: Callable[[Any], T]) -> T:
        """Run a unit of work in the writer's next transaction; its result once committed."""
        return self._submit(work).result()

    async def write_async(self, work: Callable[[Any], T]) -> T:
        return await asyncio.wrap_future(self._submit(work))

    def _submit(self, work: Callable[[Any], T]) -> concurrent.futures.Future[T]:
        if self._closed or not self._thread.is_alive():
            raise StoreError("the store is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((work, future))
        return future

    def _run(self) -> None:
        conn = self._writer_conn
        unit = _SqliteUnit(conn, self.keyring)
        while True:
            first = self._jobs.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._jobs.put(None)
                    break
                batch.append(job)
            # A submitter that gave up (a cancelled request) is skipped; nothing else is.
            live = [job for job in batch if job[1].set_running_or_notify_cancel()]
            try:
                self._commit(conn, unit, live)
            except BaseException as exc:  # noqa: BLE001 - the writer must outlive any unit
                _fail(live, StoreError(f"store write failed: {exc!r}"))
        # Closing: whoever is still queued learns it, rather than waiting forever.
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job[1].set_running_or_notify_cancel():
                job[1].set_exception(StoreError("the store is closed"))

    def _commit(self, conn: sqlite3.Connection, unit: _SqliteUnit, batch: list[_Job]) -> None:
        if not batch:
            return
        results: list[tuple[concurrent.futures.Future[Any], BaseException | None, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for work, future in batch:
                conn.execute("SAVEPOINT unit")
                try:
                    value = work(unit)
                except Exception as exc:  # noqa: BLE001 - handed to the submitter
                    conn.execute("ROLLBACK TO unit")
                    conn.execute("RELEASE unit")
                    if isinstance(exc, sqlite3.Error):
                        exc = StoreError(f"store write failed: {exc}")
                    results.append((future, exc, None))
                else:
                    conn.execute("RELEASE unit")
                    results.append((future, None, value))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            _fail(batch, StoreError(f"store write failed: {exc}"))
            return
        for future, error, value in results:
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    # -- reads ------------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError("the store is closed")
            conn = _connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def message(self, message_id: str) -> MessageRow | None:
        return _message(self._reader(), message_id)

    def messages_for_subject(self, subject: str) -> list[MessageRow]:
        rows = self._reader().execute(
            "SELECT id, sender, type, subject, trace_id, correlation_id, received_at, body_sha256,"
            " leaf_index, receipt FROM messages WHERE subject = ? ORDER BY leaf_index",
            (subject,),
        )
        return [MessageRow(*r) for r in rows]

    def deliveries(self, message_id: str) -> list[DeliveryRow]:
        rows = self._reader().execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries"  # noqa: S608 - constant column list
            " WHERE message_id = ? ORDER BY id",
            (message_id,),
        )
        return [_delivery(r) for r in rows]

    def outbox_depth(self) -> int:
        """Deliveries not finished yet (pending, delivering or retrying)."""
        unfinished = (
            "SELECT COUNT(*) FROM deliveries WHERE state IN ('pending', 'delivering', 'retrying')"
        )
        return int(self._reader().execute(unfinished).fetchone()[0])

    def payload(self, sha256: str) -> bytes | None:
        return _payload(self._reader(), sha256, self.keyring)

    def case(self, subject: str) -> tuple[str | None, list[str]] | None:
        row = (
            self._reader()
            .execute("SELECT competent_region, parties FROM cases WHERE subject = ?", (subject,))
            .fetchone()
        )
        return (row[0], json.loads(row[1])) if row else None

    def leaves(self, start: int = 0, end: int | None = None) -> list[LeafRow]:
        return _leaves(self._reader(), start, end)

    def checkpoints(self) -> list[dict[str, Any]]:
        return _checkpoints(self._reader())

    # -- checkpoint timestamps (RFC 3161) ---------------------------------------------------------
    def timestamps_due(self, now: str, limit: int) -> list[dict[str, Any]]:
        """Checkpoints awaiting a token whose next attempt is due, the longest-waiting first."""
        rows = self._reader().execute(
            "SELECT c.tree_size, c.root_hash, c.time, c.key_id, c.signature, t.attempts"
            " FROM checkpoint_timestamps t JOIN checkpoints c ON c.tree_size = t.tree_size"
            " WHERE t.token IS NULL AND t.next_attempt_at <= ?"
            " ORDER BY t.next_attempt_at, t.tree_size LIMIT ?",
            (now, limit),
        )
        keys = ("tree_size", "root_hash", "time", "key_id", "signature", "attempts")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def timestamp_queue(self) -> tuple[int, str | None]:
        """How many checkpoints await a token, and since when the oldest has been waiting."""
        row = (
            self._reader()
            .execute(
                "SELECT COUNT(*), MIN(queued_at) FROM checkpoint_timestamps WHERE token IS NULL"
            )
            .fetchone()
        )
        return int(row[0]), row[1]

    def newest_checkpoint_unqueued(self) -> bool:
        """True when the newest checkpoint has no timestamp row (two primary-key look-ups)."""
        row = (
            self._reader()
            .execute(
                "SELECT (SELECT MAX(tree_size) FROM checkpoints),"
                " (SELECT MAX(tree_size) FROM checkpoint_timestamps)"
            )
            .fetchone()
        )
        return row[0] is not None and (row[1] is None or row[0] > row[1])

    def timestamps(self) -> list[dict[str, Any]]:
        """Every checkpoint's timestamp row, stamped or waiting, by tree size."""
        rows = self._reader().execute(
            "SELECT tree_size, queued_at, attempts, last_error, tsa_url, token, gen_time,"
            " stamped_at FROM checkpoint_timestamps ORDER BY tree_size"
        )
        keys = (
            "tree_size",
            "queued_at",
            "attempts",
            "last_error",
            "tsa_url",
            "token",
            "gen_time",
            "stamped_at",
        )
        return [
            {**dict(zip(keys, r, strict=True)), "token": bytes(r[5]) if r[5] else None}
            for r in rows
        ]

    def ping(self) -> None:
        self._reader().execute("SELECT 1").fetchone()

    # -- replay: every version of the configuration files the hub loaded ------------------------
    def artefact(self, sha256: str) -> bytes | None:
        """The bytes of a schema, mapping or parties file, by the SHA-256 the evidence gives."""
        row = (
            self._reader()
            .execute("SELECT content FROM artefacts WHERE sha256 = ?", (sha256,))
            .fetchone()
        )
        return bytes(row[0]) if row else None

    # -- payload store ----------------------------------------------------------------------------
    def payload_digests(self) -> list[str]:
        return [r[0] for r in self._reader().execute("SELECT sha256 FROM payloads ORDER BY sha256")]

    def close(self) -> None:
        """Commit what is queued, stop the writer, close every connection."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._writer_conn.close()
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()

    # -- evidence log reads for proofs (the auditor's API) ----------------------------------------
    def leaf_count(self) -> int:
        row = self._reader().execute("SELECT COALESCE(MAX(leaf_index) + 1, 0) FROM evidence")
        return int(row.fetchone()[0])

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        rows = self._reader().execute(
            "SELECT leaf_hash FROM evidence WHERE leaf_index >= ? AND leaf_index < ?"
            " ORDER BY leaf_index",
            (start, end),
        )
        return [bytes(r[0]) for r in rows]

    def leaf(self, index: int) -> LeafRow | None:
        found = _leaves(self._reader(), index, index + 1)
        return found[0] if found else None

    # A checkpoint with its RFC 3161 token and the authority that gave it, when it has one.
    _CHECKPOINT = (
        "SELECT c.tree_size, c.root_hash, c.time, c.key_id, c.signature, t.token, t.tsa_url"
        " FROM checkpoints c LEFT JOIN checkpoint_timestamps t ON t.tree_size = c.tree_size"
    )

    def latest_checkpoint(self) -> dict[str, Any] | None:
        return self._one_checkpoint(
            f"{self._CHECKPOINT} ORDER BY c.tree_size DESC LIMIT 1",
            (),
        )

    def checkpoint(self, tree_size: int) -> dict[str, Any] | None:
        return self._one_checkpoint(
            f"{self._CHECKPOINT} WHERE c.tree_size = ?",
            (tree_size,),
        )

    def _one_checkpoint(self, query: str, args: tuple[int, ...]) -> dict[str, Any] | None:
        row = self._reader().execute(query, args).fetchone()
        keys = ("tree_size", "root_hash", "time", "key_id", "signature", "token", "tsa_url")
        return dict(zip(keys, row, strict=True)) if row else None
