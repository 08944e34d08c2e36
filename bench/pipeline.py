"""In-process pipeline throughput against its floor (no HTTP).

Pushes the portal's ``application.submitted`` (JSON) to the competent region (Flanders, JSON)
through every stage — hardened parse, JSON binding, sender XSD, mapping to canonical, canonical
XSD, domain checks, authorisation, routing, mapping out, receiver XSD, JSON out, evidence record,
signature, one durable SQLite commit — and, in the same run, the floor: the same unavoidable steps
done directly with the libraries and nothing around them:

  json.loads; a bare dict→element walk for the XML form; lxml XMLSchema validation of the sender,
  canonical and receiver forms; the two XSLT transforms; a bare element→dict walk and json.dumps
  for the outbound JSON; SHA-256 of the three payloads; each payload encrypted at rest as the
  hub keeps it (AES-256-GCM under a fresh data key, the key wrapped by a master key, RFC 3394);
  one ECDSA signature; one SQLite transaction (payloads and their keys, leaf, message and outbox
  rows) committed with synchronous=FULL.

Last line: ``pipeline_msgs_per_s=<n> floor_msgs_per_s=<m> ratio=<n/m>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from lxml import etree

from gateway import pipeline
from gateway.certs import init_dev_pki
from gateway.config import HubConfig, Settings
from gateway.evidence import HubSigner
from gateway.mapping import MappingSet
from gateway.outbox import iso, utc_now
from gateway.payloads import Keyring
from gateway.signatures import SignatureVerifier
from gateway.store.sqlite import SqliteStore
from gateway.xml import DEFAULT_LIMITS

HOME = Path(__file__).resolve().parents[1]
EXAMPLE = HOME / "examples" / "be-platform" / "application.submitted.json"
RECEIVER = "be-vlg-wse"


def bodies(count: int) -> list[bytes]:
    """The example with a fresh message id each (the id is the idempotency key)."""
    template = json.loads(EXAMPLE.read_bytes())
    out = []
    for _ in range(count):
        template["header"]["messageId"] = str(uuid.uuid4())
        out.append(json.dumps(template).encode())
    return out


class Lookup:
    def case(self, subject: str) -> None:
        return None

    def sender_of(self, message_id: str) -> None:
        return None


def run_pipeline(
    messages: list[bytes],
    mappings: MappingSet,
    config: HubConfig,
    store: SqliteStore,
    signer: HubSigner,
) -> float:
    lookup = Lookup()
    # The stages after the HTTP edge, without a message signature (bench/http_load.py signs).
    unsigned = SignatureVerifier(None, config.parties, required=False)
    started = time.perf_counter()
    for body in messages:
        inbound = pipeline.InboundMessage(
            "be-platform", body, "application/json", "rest", str(uuid.uuid4()), iso(utc_now())
        )
        validated = pipeline.validate(inbound, mappings, DEFAULT_LIMITS, unsigned)
        authorised = pipeline.authorise(validated, config.parties)
        canonical = pipeline.to_canonical(authorised, mappings)
        routed = pipeline.route(canonical, config.parties, mappings, lookup)
        store.write(pipeline.seal(routed, signer, b"k" * 32))
    return len(messages) / (time.perf_counter() - started)


def _to_xml(parent: etree._Element, value: dict[str, Any]) -> None:
    for key, item in value.items():
        for entry in item if isinstance(item, list) else (item,):
            child = etree.SubElement(parent, key)
            if isinstance(entry, dict):
                _to_xml(child, entry)
            else:
                child.text = str(entry).lower() if isinstance(entry, bool) else str(entry)


def _to_dict(element: etree._Element) -> dict[str, Any] | str:
    if len(element) == 0:
        return element.text or ""
    out: dict[str, Any] = {}
    for child in element:
        out[etree.QName(child).localname] = _to_dict(child)
    return out


def run_floor(messages: list[bytes], mappings: MappingSet, db: Path, signer: HubSigner) -> float:
    inbound_map = mappings.get("be-platform", "to-canonical", "application.submitted")
    outbound_map = mappings.get(RECEIVER, "from-canonical", "application.submitted")
    sender_xsd = (
        mappings.party("be-platform").schema.files["urn:be:guichet:party:be-platform:1"].lxml
    )
    canonical_xsd = mappings.catalog["canonical"].files["urn:be:guichet:canonical:1"].lxml
    receiver_schema = mappings.party(RECEIVER).schema
    receiver_xsd = next(iter(receiver_schema.files.values())).lxml
    root_tag = inbound_map.source_root
    params = {
        k: etree.XSLT.strparam(v)
        for k, v in {
            "sender": "be-platform",
            "receiver": RECEIVER,
            "traceId": "t",
            "receivedAt": "2026-11-27T10:00:00Z",
        }.items()
    }
    master_key = os.urandom(32)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(
        "CREATE TABLE IF NOT EXISTS p (sha TEXT PRIMARY KEY, content BLOB);"
        "CREATE TABLE IF NOT EXISTS k (sha TEXT PRIMARY KEY, wrapped BLOB);"
        "CREATE TABLE IF NOT EXISTS leaf (i INTEGER PRIMARY KEY, h BLOB, rec BLOB, sig TEXT);"
        "CREATE TABLE IF NOT EXISTS m (id TEXT PRIMARY KEY, leaf INTEGER);"
        "CREATE TABLE IF NOT EXISTS d (id INTEGER PRIMARY KEY, m TEXT, sha TEXT);"
    )
    offset = conn.execute("SELECT COALESCE(MAX(i) + 1, 0) FROM leaf").fetchone()[0]
    started = time.perf_counter()
    for index, body in enumerate(messages, start=offset):
        value = json.loads(body)
        form = etree.Element(root_tag)
        _to_xml(form, value)
        assert sender_xsd.validate(form)
        canonical = inbound_map.xslt(form, **params).getroot()
        assert canonical_xsd.validate(canonical)
        out = outbound_map.xslt(canonical, **params).getroot()
        assert receiver_xsd.validate(out)
        out_bytes = json.dumps(_to_dict(out)).encode()
        canonical_bytes = etree.tostring(canonical)
        digests = [hashlib.sha256(b).hexdigest() for b in (body, canonical_bytes, out_bytes)]
        sealed = []
        for digest, content in zip(digests, (body, canonical_bytes, out_bytes), strict=True):
            data_key, nonce = os.urandom(32), os.urandom(12)
            ciphertext = AESGCM(data_key).encrypt(nonce, content, bytes.fromhex(digest))
            sealed.append((digest, nonce + ciphertext, aes_key_wrap(master_key, data_key)))
        leaf = json.dumps(digests).encode()
        leaf_digest = hashlib.sha256(b"\x00" + leaf).digest()
        signature = signer.sign(leaf_digest)
        message_id = value["header"]["messageId"]
        conn.execute("BEGIN")
        conn.executemany("INSERT OR IGNORE INTO p VALUES (?, ?)", [(d, c) for d, c, _ in sealed])
        conn.executemany("INSERT OR IGNORE INTO k VALUES (?, ?)", [(d, w) for d, _, w in sealed])
        conn.execute("INSERT INTO leaf VALUES (?, ?, ?, ?)", (index, leaf_digest, leaf, signature))
        conn.execute("INSERT INTO m VALUES (?, ?)", (message_id, index))
        conn.execute("INSERT INTO d (m, sha) VALUES (?, ?)", (message_id, digests[2]))
        conn.execute("COMMIT")
    rate = len(messages) / (time.perf_counter() - started)
    conn.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    config = HubConfig.load(Settings(home=HOME))
    mappings = MappingSet.load(HOME)
    print(
        f"message: {EXAMPLE.relative_to(HOME)} ({EXAMPLE.stat().st_size} bytes), "
        f"be-platform → {RECEIVER}"
    )
    with tempfile.TemporaryDirectory(prefix="guichet-bench-") as scratch:
        folder = Path(scratch)
        pki = init_dev_pki(folder / "pki", [])
        signer = HubSigner.from_files(pki.signing_key, pki.signing_cert)
        store = SqliteStore(folder / "pipeline.db", Keyring.from_files(pki.payload_key))
        best_pipeline = best_floor = 0.0
        try:
            for round_ in range(args.rounds):
                # Alternate the two in each round so machine noise hits both alike.
                rate_pipeline = run_pipeline(bodies(args.messages), mappings, config, store, signer)
                rate_floor = run_floor(bodies(args.messages), mappings, folder / "floor.db", signer)
                print(
                    f"round {round_ + 1}: pipeline {rate_pipeline:8.1f} msg/s   "
                    f"floor {rate_floor:8.1f} msg/s   ratio {rate_pipeline / rate_floor:.3f}"
                )
                best_pipeline = max(best_pipeline, rate_pipeline)
                best_floor = max(best_floor, rate_floor)
        finally:
            store.close()
    print(
        f"pipeline_msgs_per_s={best_pipeline:.1f} floor_msgs_per_s={best_floor:.1f} "
        f"ratio={best_pipeline / best_floor:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
