"""The PostgreSQL store with several replicas on one schema: dense leaves, one claim per
delivery, one sequencer with failover, one migration history, schemas kept apart.

These open their stores themselves on the local server (PostgreSQL on 127.0.0.1:5432, as in CI).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway import evidence
from gateway.certs import DevPki
from gateway.errors import StoreError
from gateway.evidence import HubSigner, Leaf
from gateway.store import LeafRow, MessageRow, open_store, sqlite_path
from gateway.store.postgres import PostgresStore, redacted
from gateway.store.sql import SqlStore
from tests.conftest import HOME, postgres_schema_url

pytestmark = pytest.mark.own_store

SERVER = os.environ.get("GUICHET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def url() -> Iterator[str]:
    name = f"p_{uuid.uuid4().hex[:16]}"
    yield postgres_schema_url(SERVER, name)
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def replicas(url: str, tmp_path: Path) -> Iterator[list[SqlStore]]:
    stores = [open_store(url, tmp_path) for _ in range(2)]
    yield stores
    for store in stores:
        store.close()


def _append(tag: str) -> Any:
    def work(unit: Any) -> int:
        index = int(unit.next_leaf_index())
        unit.append_leaf(LeafRow(index, tag.encode(), tag.encode(), "t", "k", "s"))
        return index

    return work


def test_replicas_number_leaves_densely_in_commit_order(replicas: list[SqlStore]) -> None:
    taken: list[int] = []
    lock = threading.Lock()

    def run(store: SqlStore, worker: int) -> None:
        for i in range(40):
            index = store.write(_append(f"{worker}-{i}"))
            with lock:
                taken.append(index)

    threads = [threading.Thread(target=run, args=(replicas[n % 2], n)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(taken) == list(range(240))  # no index taken twice, none skipped
    leaves = replicas[1].leaves()
    assert [leaf.leaf_index for leaf in leaves] == list(range(240))


def _message(store: SqlStore, receivers: list[str], case: str | None = None) -> str:
    message_id = str(uuid.uuid4())
    subject = case or f"case-{message_id}"

    def work(unit: Any) -> None:
        unit.insert_message(
            MessageRow(message_id, "be-platform", "t", subject, "trace", None, "2026", "d", 0, "{}")
        )
        for receiver in receivers:
            unit.add_delivery(message_id, receiver, "d", "application/json", "2026-01-01T00:00:00Z")

    store.write(work)
    return message_id


LATER, LEASE = "2027-01-01T00:00:00Z", "2027-01-01T00:10:00Z"


def test_each_delivery_is_claimed_by_one_replica(replicas: list[SqlStore]) -> None:
    for _ in range(30):
        _message(replicas[0], ["be-vlg-wse", "be-fed-ibz"])
    claimed: list[int] = []
    lock = threading.Lock()

    def claim(store: SqlStore) -> None:
        for _ in range(40):
            rows = store.write(
                lambda unit: unit.claim_deliveries(
                    "2027-01-01T00:00:00Z", "2027-01-01T00:10:00Z", 2
                )
            )
            with lock:
                claimed.extend(row.id for row in rows)

    threads = [threading.Thread(target=claim, args=(s,)) for s in (*replicas, *replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(claimed) == len(set(claimed)) == 60


def test_replicas_claiming_at_once_keep_a_case_in_order(replicas: list[SqlStore]) -> None:
    """Ten messages of one case to two receivers: however many replicas claim at once, each
    receiver has one of them in hand — the first — until it is finished."""
    ids = [_message(replicas[0], ["be-vlg-wse", "be-fed-ibz"], case="one-case") for _ in range(10)]
    claimed: list[Any] = []
    barrier = threading.Barrier(4)

    def claim(store: SqlStore) -> None:
        barrier.wait()
        rows = store.write(lambda unit: unit.claim_deliveries(LATER, LEASE, 5))
        claimed.extend(rows)

    threads = [threading.Thread(target=claim, args=(s,)) for s in (*replicas, *replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted((row.receiver, row.message_id) for row in claimed) == [
        ("be-fed-ibz", ids[0]),
        ("be-vlg-wse", ids[0]),
    ]


def test_one_sequencer_and_another_when_it_dies(url: str, tmp_path: Path) -> None:
    first, second = open_store(url, tmp_path), open_store(url, tmp_path)
    try:
        assert first.lead() is True
        assert second.lead() is False
        assert first.lead() is True  # held, and checked alive
        first.close()  # it resigns; a killed process's session ends and frees the lock too
        assert second.lead() is True
    finally:
        first.close()
        second.close()


def test_schemas_are_apart_even_for_their_locks(tmp_path: Path) -> None:
    urls = [postgres_schema_url(SERVER, f"p_{uuid.uuid4().hex[:16]}") for _ in range(2)]
    stores = [open_store(u, tmp_path) for u in urls]
    try:
        assert all(store.lead() for store in stores)  # one sequencer per schema
        stores[0].write(_append("a"))
        assert stores[1].leaf_count() == 0
    finally:
        for store, u in zip(stores, urls, strict=True):
            store.close()
            with psycopg.connect(SERVER, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{u.rsplit("%3D", 1)[1]}" CASCADE')


def test_one_migration_history_for_both_engines(url: str, tmp_path: Path) -> None:
    postgres = open_store(url, tmp_path)
    sqlite = open_store(None, tmp_path)
    try:
        assert postgres.version() == sqlite.version() > 0
        assert postgres.applied == postgres.version()  # created from nothing
        again = open_store(url, tmp_path)
        assert again.applied == 0
        again.close()
        with psycopg.connect(url) as conn:
            columns = dict(
                conn.execute(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = 'evidence'"
                ).fetchall()
            )
        assert columns["leaf_hash"] == "bytea"
        assert columns["leaf_index"] == "bigint"
    finally:
        postgres.close()
        sqlite.close()


def test_db_upgrade_creates_then_reports(url: str, tmp_path: Path) -> None:
    def upgrade() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "db", "upgrade", "--store", url,
             "--data-dir", str(tmp_path)],
            cwd=HOME, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        return done.stdout

    first = upgrade()
    assert "applied" in first
    assert "search_path=p_" in first
    second = upgrade()
    assert "applied" not in second
    assert "at version" in second


def test_the_store_address_never_shows_its_password() -> None:
    shown = redacted("postgresql://guichet:s3cret@db.example:5432/hub")
    assert "s3cret" not in shown
    assert "db.example" in shown


def test_an_unknown_store_kind_is_named() -> None:
    with pytest.raises(StoreError, match="unknown store 'mysql'"):
        sqlite_path("mysql://x/y")


def test_an_unreachable_database_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot reach the store") as caught:
        PostgresStore("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")
    assert caught.value.code == "store.unavailable"


def test_the_log_of_a_postgresql_hub_verifies_from_its_database(
    url: str, tmp_path: Path, pki: DevPki
) -> None:
    """An auditor verifies a PostgreSQL hub's log from the database, read-only."""
    signer = HubSigner.from_files(pki.signing_key, pki.signing_cert)
    store = open_store(url, tmp_path)
    try:
        for n in range(5):
            leaf = Leaf.of(evidence.record("configuration.loaded", f"2026-01-0{n + 1}T00:00:00Z"))
            store.write(lambda unit, leaf=leaf: evidence.append(unit, signer, leaf, "2026"))
    finally:
        store.close()
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "verify", "--store", url,
         "--cert", str(pki.signing_cert)],
        cwd=HOME, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "5 leaves" in done.stdout


def test_a_message_id_sealed_by_two_replicas_at_once_is_sealed_once(
    replicas: list[SqlStore],
) -> None:
    """A write transaction holds the store's write lock from its start: the second replica to
    look the id up sees the first one's message (a duplicate answered, not a key violation)."""
    message_id = str(uuid.uuid4())
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def seal(unit: Any) -> str:
        if unit.message(message_id) is not None:
            return "duplicate"
        row = MessageRow(message_id, "be-platform", "t", "case", "tr", None, "2026", "d", 0, "{}")
        unit.insert_message(row)
        return "accepted"

    def run(store: SqlStore) -> None:
        barrier.wait()
        outcomes.append(store.write(seal))

    threads = [threading.Thread(target=run, args=(store,)) for store in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["accepted", "duplicate"]


def test_replicas_mixing_claims_and_appends_never_deadlock(replicas: list[SqlStore]) -> None:
    """Replica A's batch is [claim, append], B's is [append, claim], the first unit of each run
    at the same moment: with a lock per kind of write they would wait for each other (deadlock,
    one batch lost); every write transaction takes the one WRITE lock first, so B waits."""
    _message(replicas[0], ["be-vlg-wse"])
    together = threading.Barrier(2, timeout=3)

    def first(work: Any) -> Any:
        def unit_then_meet(unit: Any) -> Any:
            value = work(unit)
            with contextlib.suppress(threading.BrokenBarrierError):
                together.wait()  # B cannot come while A holds the lock: A goes on alone
            return value

        return unit_then_meet

    def claim(unit: Any) -> Any:
        return unit.claim_deliveries(LATER, LEASE, 1)

    gate = threading.Event()

    def batch(store: SqlStore, units: list[Any]) -> list[Any]:
        store._submit(lambda unit: gate.wait(10))  # the writer busy: the units queue behind
        return [store._submit(work) for work in units]

    a = batch(replicas[0], [first(claim), _append("a")])
    b = batch(replicas[1], [first(_append("b")), claim])
    gate.set()  # both writers go: A claims while B appends
    for future in (*a, *b):
        future.result(timeout=60)  # DeadlockDetected would surface here as a StoreError
    assert [leaf.leaf_index for leaf in replicas[0].leaves()] == [0, 1]
