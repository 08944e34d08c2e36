"""The PostgreSQL store: several hub replicas share one database.

Same tables, same statements and same migration history as the SQLite store
(``gateway.store.sql``). Each replica has one writer connection (its group-committing writer
thread) and a small pool for reads. What SQLite gets from having a single writer, PostgreSQL gets
from advisory locks, scoped to the store's schema:

- every write transaction of every replica takes the WRITE lock right after BEGIN and holds it to
  its commit: replicas write one at a time (the writer's group commit makes that one lock per
  batch of units, not per message), so leaves are numbered densely in commit order, a message id
  sealed by one replica is seen by the next, and with one lock taken in one place no two
  replicas can deadlock;
- deliveries are claimed with ``FOR UPDATE SKIP LOCKED``, and each is claimed once; a receiver
  gets one case's messages in order;
- exactly one replica, the *sequencer*, holds the SEQUENCER session lock and runs the
  checkpointer; when it dies its session ends, the lock is freed and another replica takes over
  at its next tick.

The database going away (a restart) fails what is in flight with ``store.unavailable`` (503);
connections are made anew once it is back.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from gateway.errors import StoreError
from gateway.payloads import Keyring
from gateway.store.sql import SEQUENCER, Connection, Dialect, SqlStore

__all__ = ["PostgresStore", "read_only", "redacted"]

_CONNECT_TIMEOUT_S = 5
# Every connection: a dead peer (a host gone, a network cut) is noticed in about half a minute,
# not after the kernel's two hours — a replica that died holding the WRITE lock or the
# sequencer's lock frees it when its session is dropped.
_CONNECTION: dict[str, Any] = {
    "autocommit": True,
    "connect_timeout": _CONNECT_TIMEOUT_S,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def redacted(url: str) -> str:
    """The store's address without its password (for messages and logs)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:  # its message may quote the address, password and all
        raise StoreError("not a readable PostgreSQL address", code="store.not-found") from None
    for secret in ("password", "sslpassword"):
        params.pop(secret, None)
    return make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None})


def _schema_key(schema: str) -> int:
    """The advisory-lock class of a schema: 32 bits of its name's SHA-256."""
    digest = hashlib.sha256(f"guichet:{schema}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def _dialect(schema: str) -> Dialect:
    return Dialect(
        "postgresql",
        "BEGIN",
        (psycopg.Error, psycopg_pool.PoolTimeout),
        key=_schema_key(schema),
        lock_rows=" FOR UPDATE SKIP LOCKED",
    )


@contextmanager
def read_only(url: str) -> Iterator[tuple[Connection, Dialect]]:
    """A connection in a read-only transaction (an auditor reading a hub's database): one
    snapshot for everything read, and its dialect."""
    try:
        conn = psycopg.connect(url, **_CONNECTION)
    except psycopg.Error as exc:
        raise StoreError(f"cannot reach the store {redacted(url)}: {exc}") from exc
    try:
        # One snapshot for every read: leaves and checkpoints as of one moment, even while the
        # hub goes on writing.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        row = conn.execute("SELECT current_schema()").fetchone()
        yield conn, _dialect(str(row[0]) if row else "public")
        conn.execute("ROLLBACK")
    except psycopg.Error as exc:
        raise StoreError(
            f"{redacted(url)} is not a readable store: {exc}", code="store.not-found"
        ) from exc
    finally:
        conn.close()


class PostgresStore(SqlStore):
    """A store in a PostgreSQL database (psycopg 3), shared by every replica of the hub."""

    def __init__(
        self, url: str, payload_keys: Keyring | None = None, *, pool_size: int = 8
    ) -> None:
        self.url = url
        self.where = redacted(url)
        self.keyring = payload_keys
        conn = self._connect()
        schema = conn.execute("SELECT current_schema()").fetchone()
        if schema is None or schema[0] is None:
            conn.close()
            raise StoreError(
                f"{self.where}: no schema to work in (is the search_path's schema created?)",
                code="store.not-found",
            )
        self.schema = str(schema[0])
        self.dialect = _dialect(self.schema)
        try:
            self.applied = self._migrate(conn)
            if payload_keys is not None:
                self._seal_clear_payloads(conn, payload_keys)
        except BaseException:
            conn.close()
            raise
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs=_CONNECTION,
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=_CONNECT_TIMEOUT_S,
            name="guichet-readers",
            open=True,
        )
        self._away = False  # the database was found unreachable (see _reading)
        self._lead_lock = threading.Lock()
        self._leader: psycopg.Connection[Any] | None = None
        self._leading = False
        self._start_writer(conn)

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self.url, **_CONNECTION)
            # A writer stuck inside a transaction (a hung peer) lets go of the WRITE lock.
            conn.execute("SET idle_in_transaction_session_timeout = '60s'")
        except psycopg.Error as exc:
            raise StoreError(f"cannot reach the store {self.where}: {exc}") from exc
        return conn

    def migrate(self) -> int:
        """Apply the migrations the database lacks; how many were."""
        conn = self._connect()
        try:
            return self._migrate(conn)
        finally:
            conn.close()

    def _connect_writer(self) -> Connection:
        return self._connect()

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A pooled connection; while the database is known to be away, a connection of its
        own, so that a read fails at once (connection refused) rather than after the pool's
        wait, and succeeds at once when the database is back, whatever the pool's reconnection
        delay (seconds, doubling while the database was away)."""
        if self._closed:
            raise StoreError("the store is closed")
        if self._away:
            with self._direct() as conn:
                yield conn
            self._back()
            return
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            self._away = True
            raise StoreError(f"the store is unavailable: {type(exc).__name__}") from exc
        except psycopg_pool.PoolTimeout as exc:
            # Every pooled connection busy (load), or none to be had (the database away): only
            # the second sends reads to connections of their own.
            self._away = not self._reachable()
            raise StoreError("the store is unavailable: no connection in time") from exc

    def _reachable(self) -> bool:
        try:
            self._connect().close()
        except StoreError:
            return False
        return True

    @contextmanager
    def _direct(self) -> Iterator[Connection]:
        conn = self._connect()  # StoreError (store.unavailable) while the database is away
        try:
            yield conn
        except psycopg.OperationalError as exc:
            raise StoreError(f"the store is unavailable: {type(exc).__name__}") from exc
        finally:
            conn.close()

    def _found_away(self) -> None:
        self._away = True

    def _back(self) -> None:
        """The database answers again: reads return to the pool once it holds a connection
        (its broken ones are replaced now, not at the next step of its reconnection backoff)."""
        self._pool.check()
        # Back to the pool once it holds connections again (in use or not: under load none may
        # be free, and that is no reason to open a connection per read).
        self._away = not self._pool.get_stats().get("pool_size", 0)

    def _close_readers(self) -> None:
        self._pool.close()
        with self._lead_lock:
            self._resign()

    def erase_freed(self) -> None:
        """VACUUM the purged tables: the deleted keys' row versions are removed from the pages
        (their bytes may remain on disk until the pages are reused: use encrypted storage)."""
        with self._reading() as conn:
            conn.execute("VACUUM payload_keys, payloads")

    # -- the sequencer ----------------------------------------------------------------------------
    def lead(self) -> bool:
        """Whether this replica is the sequencer: it holds the SEQUENCER lock on a session of
        its own, checked alive at every call (a leader that lost its database is no leader)."""
        with self._lead_lock:
            if self._closed:
                return False
            try:
                if self._leader is None:
                    self._leader = self._connect()
                    self._leading = False
                if self._leading:
                    self._leader.execute("SELECT 1").fetchone()
                    return True
                row = self._leader.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (self.dialect.key, SEQUENCER.value)
                ).fetchone()
                self._leading = bool(row and row[0])
            except (psycopg.Error, StoreError):
                self._resign()
            return self._leading

    def _resign(self) -> None:
        leader, self._leader = self._leader, None
        if leader is not None:
            with contextlib.suppress(psycopg.Error):
                if self._leading:  # handed over at once, not when the session is reaped
                    leader.execute("SELECT pg_advisory_unlock_all()")
            with contextlib.suppress(psycopg.Error):
                leader.close()  # the session ends: its lock is free for another replica
        self._leading = False
