"""The embedded store: SQLite in WAL mode, durable commits, one writer thread with group commit."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.errors import StoreError
from gateway.payloads import Keyring
from gateway.store import LeafRow
from gateway.store.sql import Connection, Dialect, SqlStore, _checkpoints, _leaves, migrations
from gateway.store.sql import payload as _payload

__all__ = ["SQLITE", "SqliteStore", "migrations", "read_log", "read_payload", "readonly"]

SQLITE = Dialect("sqlite", "BEGIN IMMEDIATE", (sqlite3.Error,))


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk when it returns, so a 202 is never given for a lost message.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    # Deleted content is overwritten with zeros: a purged body's wrapped key leaves no trace.
    conn.execute("PRAGMA secure_delete=ON")
    return conn


@contextmanager
def readonly(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a store (an auditor's copy is never written to)."""
    if not path.is_file():
        raise StoreError(f"no store at {path}", code="store.not-found")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield conn
    except sqlite3.Error as exc:
        raise StoreError(f"{path} is not a readable store: {exc}", code="store.not-found") from exc
    finally:
        conn.close()


def read_payload(path: Path, sha256: str, keyring: Keyring) -> bytes | None:
    """One body of a store, read-only (an auditor's copy), decrypted with ``keyring``."""
    with readonly(path) as conn:
        return _payload(conn, SQLITE, sha256, keyring)


def read_log(path: Path) -> tuple[list[LeafRow], list[dict[str, Any]]]:
    """The evidence log of a store, read-only (an auditor's copy is never written to)."""
    with readonly(path) as conn:
        return _leaves(conn, SQLITE), _checkpoints(conn)


class SqliteStore(SqlStore):
    """SQLite store. All writes go through one writer thread, batched into shared commits;
    each reading thread has a connection of its own."""

    dialect = SQLITE

    def __init__(self, path: Path, payload_keys: Keyring | None = None) -> None:
        """``payload_keys``: the master keys that wrap the bodies' data keys; without them the
        store keeps no body and reads none (``guichet audit`` commands need none)."""
        self.path = path
        self.where = str(path)
        self.keyring = payload_keys
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        conn = _connect(path)
        self.applied = self._migrate(conn)
        if payload_keys is not None and self._seal_clear_payloads(conn, payload_keys):
            self.erase_freed()
        self._start_writer(conn)

    def migrate(self) -> int:
        """Apply the migrations the file lacks; how many were."""
        conn = _connect(self.path)
        try:
            return self._migrate(conn)
        finally:
            conn.close()

    def _connect_writer(self) -> Connection:
        return _connect(self.path)

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError("the store is closed")
            conn = _connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        yield conn

    def _close_readers(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()

    def erase_freed(self) -> None:
        """Copy the log of writes into the database and empty it, so that pages from before a
        deletion (a purge) do not linger in the WAL file (best effort while others read)."""
        conn = _connect(self.path)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
