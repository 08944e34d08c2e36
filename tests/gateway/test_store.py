"""The SQLite store's writer: group commit, isolation of failing units, cancellation, closing."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import StoreError
from gateway.store import open_store
from gateway.store.sql import SqlStore


def _put(name: str) -> Any:
    return lambda unit: unit.put_artefact(name, name, name.encode())


def _count(store: SqlStore) -> int:
    return len(store.artefacts())


def test_a_failing_unit_leaves_nothing_and_harms_no_other(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    try:

        def half_done(unit: Any) -> None:
            unit.put_artefact("half", "half", b"x")
            raise ValueError("refused")

        results: list[object] = []
        barrier = threading.Barrier(3)

        def run(work: Any) -> None:
            barrier.wait()
            try:
                results.append(store.write(work))
            except ValueError as exc:
                results.append(exc)

        threads = [
            threading.Thread(target=run, args=(w,)) for w in (_put("a"), half_done, _put("b"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sum(isinstance(r, ValueError) for r in results) == 1
        assert _count(store) == 2  # "half" was rolled back, a and b committed
    finally:
        store.close()


def test_sqlite_errors_inside_a_unit_become_store_errors(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    try:
        with pytest.raises(StoreError):
            store.write(lambda unit: unit.conn.execute("INSERT INTO nowhere VALUES (1)"))
        store.write(_put("after"))  # the writer is still there
        assert _count(store) == 1
    finally:
        store.close()


def test_a_cancelled_write_does_not_stop_the_writer(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    gate, holding = threading.Event(), threading.Event()

    def hold(unit: object) -> None:
        holding.set()
        gate.wait(10)

    try:
        # Hold the writer so the next unit is still queued when its submitter gives up.
        blocker = threading.Thread(target=store.write, args=(hold,))
        blocker.start()
        assert holding.wait(10)  # the writer is inside the blocking unit, whatever the load

        async def give_up() -> None:
            task = asyncio.ensure_future(store.write_async(_put("cancelled")))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(give_up())
        gate.set()
        blocker.join(10)
        store.write(_put("later"))  # would hang forever if the writer had died
        assert _count(store) == 1
    finally:
        gate.set()
        store.close()


def test_a_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    store.close()
    with pytest.raises(StoreError):
        store.write(_put("late"))


def test_migrations_run_once(tmp_path: Path) -> None:
    open_store(None, tmp_path).close()
    store = open_store(None, tmp_path)
    try:
        assert store.migrate() == 0
    finally:
        store.close()


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "in-a-batch"])
def test_a_failing_unit_is_undone_alone_or_in_a_batch(tmp_path: Path, batched: bool) -> None:
    # A batch of one runs without a savepoint (its transaction is one): the same outcome.
    store = open_store(None, tmp_path)
    try:

        def half_done(unit: Any) -> None:
            unit.put_artefact("half", "half", b"x")
            raise ValueError("refused")

        gate = threading.Event()
        held = store._submit(lambda unit: gate.wait(10)) if batched else None
        futures = [store._submit(w) for w in ((_put("a"), half_done) if batched else (half_done,))]
        gate.set()
        if held is not None:
            held.result(10)
        with pytest.raises(ValueError, match="refused"):
            futures[-1].result(10)
        if batched:
            futures[0].result(10)
        store.write(_put("after"))  # the writer is still there
        assert sorted(store.artefacts()) == (["a", "after"] if batched else ["after"])
    finally:
        store.close()
