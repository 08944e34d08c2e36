"""Delivered messages per second, end to end: accepted by the hub, delivered to the back offices.

Starts the sandbox back offices (``gateway.sandbox.Sandbox``, in this process, recording only:
they do not answer with messages of their own) and ``--replicas`` ``guichet serve`` processes of
one hub with their delivery workers on, pointed at the offices with ``--endpoint``; same
``--store`` as ``http_load.py`` (default: SQLite in a fresh data dir; a PostgreSQL address gets a
fresh schema for the run). Then ``--clients`` mTLS connections, round-robin over the replicas,
post ``--messages`` of the portal's ``application.submitted`` as fast as the hub accepts them,
and the store is polled until no delivery is left pending, delivering or retrying (bounded by
``--timeout``).

Reports the accepted rate (over the posting phase), the delivered rate (messages whose every
delivery is done, over the whole run: first post to last delivery), deliveries per second, and
the lag (how long the outbox needed after the last message was accepted). The back offices, the
load clients and the hub share the machine's cores.
Last line: ``delivered_msgs_per_s=<n> accepted_msgs_per_s=<a> deliveries_per_s=<d> lag_s=<l>``.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from http_load import load
from hubs import (
    cpu_seconds,
    hub_settings,
    init_pki,
    is_postgres,
    own_cpu_seconds,
    run_store,
    serve,
    store_label,
    store_pids,
)

from gateway.certs import DevPki
from gateway.config import HubConfig, Settings
from gateway.mapping import MappingSet
from gateway.sandbox import Sandbox

HOME = Path(__file__).resolve().parents[1]

_STATES = (
    "SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = 'delivered' THEN 1 ELSE 0 END), 0),"
    " COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0),"
    " COUNT(DISTINCT message_id) FROM deliveries"
)
_MESSAGES_DONE = (
    "SELECT COUNT(*) FROM (SELECT message_id FROM deliveries GROUP BY message_id"
    " HAVING SUM(CASE WHEN state = 'delivered' THEN 0 ELSE 1 END) = 0) AS done"
)


def counter(store: str) -> tuple[Callable[[str], tuple[int, ...]], Callable[[], None]]:
    """A function running one counting query on the store, and how to close it."""
    if is_postgres(store):
        import psycopg

        pg = psycopg.connect(store, autocommit=True)
        return lambda sql: tuple(int(v) for v in pg.execute(sql).fetchone() or ()), pg.close
    path = store.removeprefix("sqlite:").removeprefix("//")
    lite = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    return lambda sql: tuple(int(v) for v in lite.execute(sql).fetchone()), lite.close


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--store", default=None, metavar="URL", help="postgresql://… (default: SQLite)"
    )
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--workers", type=int, default=None, help="delivery workers per replica (hub default)"
    )
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this many seconds in all"
    )
    args = parser.parse_args(argv)
    workers = {} if args.workers is None else {"delivery_workers": str(args.workers)}
    settings = hub_settings(**workers)
    with tempfile.TemporaryDirectory(prefix="guichet-delivery-") as scratch:
        data = Path(scratch)
        pki_dir = init_pki(data)
        config = HubConfig.load(Settings(home=HOME, data_dir=data))
        mappings = MappingSet.load(HOME)
        parties = list(config.parties.parties)
        with (
            Sandbox(mappings, DevPki.at(pki_dir), parties, HOME / "examples", respond=False) as sb,
            run_store(args.store, data) as store,
            serve(data, store, args.replicas, settings, endpoints=sb.endpoints) as hubs,
        ):
            count, close = counter(store)
            try:
                backends = store_pids(store)
                pids = hubs.pids
                cpu_before = cpu_seconds(pids), cpu_seconds(backends), own_cpu_seconds()
                started = time.monotonic()
                tally = asyncio.run(
                    load(pki_dir, hubs.ports, args.clients, args.timeout, budget=args.messages)
                )
                accepted_at = time.monotonic()
                at_acceptance = count(_STATES)
                deadline = started + args.timeout
                while True:
                    total, delivered, dead, _ = count(_STATES)
                    if delivered + dead >= total or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                finished = time.monotonic()
                total, delivered, dead, messages = count(_STATES)
                (messages_done,) = count(_MESSAGES_DONE)
                cpu_after = cpu_seconds(pids), cpu_seconds(backends), own_cpu_seconds()
            finally:
                close()
            received = sum(
                sum(1 for r in office.received if not r.duplicate) for office in sb.offices.values()
            )
    accepting = accepted_at - started
    elapsed = finished - started
    accepted = tally.accepted
    hub_cpu, db_cpu, own_cpu = (b - a for a, b in zip(cpu_before, cpu_after, strict=True))
    per = 1000 / max(accepted, 1)
    print(
        f"{args.clients} clients, {args.replicas} replica(s), {store_label(args.store)},"
        f" statuses {dict(sorted(tally.statuses.items()))}"
    )
    print(
        f"accepted {accepted} in {accepting:.1f} s; {total} deliveries for {messages} messages:"
        f" {at_acceptance[1]} delivered when the last was accepted, {delivered} after"
        f" {elapsed:.1f} s ({dead} dead, {total - delivered - dead} unfinished);"
        f" the back offices received {received}"
    )
    print(
        f"hub_cpu_ms_per_msg={hub_cpu * per:.2f} bench_cpu_ms_per_msg={own_cpu * per:.2f}"
        + (f" postgres_cpu_ms_per_msg={db_cpu * per:.2f}" if backends else "")
        + " (bench: load clients + back offices)"
    )
    ok = accepted > 0 and delivered == total == received
    print(
        f"delivered_msgs_per_s={messages_done / elapsed:.1f}"
        f" accepted_msgs_per_s={accepted / accepting:.1f}"
        f" deliveries_per_s={delivered / elapsed:.1f} lag_s={finished - accepted_at:.2f}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
