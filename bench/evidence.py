"""Evidence log throughput: sealing, proofs, verification.

Seals N records (default 100 000) into a fresh SQLite store the way the hub does — each record
its own unit of work (RFC 8785 bytes, leaf hash, ECDSA P-256 signature over the receipt
statement, one row), submitted by 8 threads at once so that the store's writer batches them into
shared commits — then builds the Merkle tree the log API serves proofs from and times inclusion
and consistency proofs (generation and RFC 9162 verification), and verifies the whole log from its
rows and the hub's certificate (gateway.audit.verify_log: every leaf hash and signature, every
checkpoint root).

Last line: ``seal_records_per_s=<n> verify_records_per_s=<m>``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway import evidence, proofs
from gateway.audit import verify_log
from gateway.certs import init_dev_pki
from gateway.evidence import HubSigner, Leaf
from gateway.outbox import iso, utc_now
from gateway.store import UnitOfWork
from gateway.store.sqlite import SqliteStore


def seal(store: SqliteStore, signer: HubSigner, count: int, threads: int) -> float:
    """Seal ``count`` records from ``threads`` threads; return records per second."""

    def one(number: int) -> None:
        now = iso(utc_now())
        leaf = Leaf.of(
            evidence.record(
                "delivery.delivered",
                now,
                messageId=f"00000000-0000-4000-8000-{number:012d}",
                receiver="be-vlg-wse",
                attempt=1,
                status=202,
            )
        )

        def work(unit: UnitOfWork) -> None:
            evidence.append(unit, signer, leaf, now)

        store.write(work)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(one, range(count)):
            pass
    return count / (time.perf_counter() - started)


def prove(leaf_hashes: list[bytes], samples: int) -> None:
    """Time the tree build, and ``samples`` inclusion and consistency proofs made and checked."""
    started = time.perf_counter()
    tree = proofs.MerkleTree(leaf_hashes)
    built = time.perf_counter() - started
    size = tree.size
    root = tree.root()
    indexes = list(range(0, size, max(1, size // samples)))[:samples]
    started = time.perf_counter()
    paths = [tree.inclusion_proof(i) for i in indexes]
    made = (time.perf_counter() - started) / len(indexes)
    started = time.perf_counter()
    for index, path in zip(indexes, paths, strict=True):
        proofs.verify_inclusion(leaf_hashes[index], index, size, path, root)
    checked = (time.perf_counter() - started) / len(indexes)
    started = time.perf_counter()
    for first in indexes[1:]:
        path = tree.consistency_proof(first, size)
        proofs.verify_consistency(first, size, tree.root(first), root, path)
    consistency = (time.perf_counter() - started) / max(1, len(indexes) - 1)
    print(
        f"tree of {size} leaves built in {built * 1000:.0f} ms; inclusion proof made in"
        f" {made * 1e6:.0f} µs, verified in {checked * 1e6:.0f} µs; consistency proof made and"
        f" verified in {consistency * 1e6:.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="guichet-bench-") as scratch:
        folder = Path(scratch)
        pki = init_dev_pki(folder / "pki", [])
        signer = HubSigner.from_files(pki.signing_key, pki.signing_cert)
        store = SqliteStore(folder / "data" / "guichet.db")
        try:
            sealed = seal(store, signer, args.records, args.threads)
            print(
                f"sealed {args.records} records: {sealed:,.0f} records/s ({args.threads} threads)"
            )
            prove(store.leaf_hashes(0, args.records), min(args.records, 2_000))
            started = time.perf_counter()
            leaves = store.leaves()
            report = verify_log(leaves, store.checkpoints(), signer.certificate)
            verified = len(leaves) / (time.perf_counter() - started)
            assert report.ok, report.problems
            print(f"verified {len(leaves)} records: {verified:,.0f} records/s")
        finally:
            store.close()
    print(f"seal_records_per_s={sealed:.0f} verify_records_per_s={verified:.0f}")


if __name__ == "__main__":
    main()
