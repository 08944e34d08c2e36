"""The payload store: bodies encrypted at rest under their own keys, wrapped by the hub's master
key; a wrong key or an altered byte is named; a purge erases bodies and is sealed as evidence."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway import evidence
from gateway.audit import verify_log
from gateway.certs import DevPki, init_dev_pki, write_master_key
from gateway.config import HubConfig, Settings
from gateway.demo import CASE_TYPES
from gateway.errors import ConfigurationError, PayloadError, PayloadPurgedError, StoreError
from gateway.evidence import HubSigner
from gateway.hub import Hub
from gateway.outbox import iso
from gateway.payloads import Keyring, MasterKey, parse_before, purge
from gateway.store import UnitOfWork, open_store
from gateway.store.sql import SqlStore
from gateway.store.sqlite import read_payload
from gateway.testing import running_hub, wait_until
from tests.conftest import EXAMPLES, guichet

NATIONAL_NUMBER = "94431502752"  # the applicant's, in examples/be-platform/application.submitted
NAME = "Raghunathan"
BODY = json.dumps({"applicant": {"name": NAME, "nationalRegisterNumber": NATIONAL_NUMBER}}).encode()
SHA = hashlib.sha256(BODY).hexdigest()


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def keyring(folder: Path, name: str = "payload-master.key") -> Keyring:
    write_master_key(folder / name)
    return Keyring.from_files(folder / name)


def files_bytes(db: Path) -> bytes:
    """The database and whatever SQLite keeps beside it (WAL, shared memory)."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.fixture
def keys(tmp_path: Path) -> Keyring:
    return keyring(tmp_path)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> HubSigner:
    pki = init_dev_pki(tmp_path_factory.mktemp("pki"), [])
    return HubSigner.from_files(pki.signing_key, pki.signing_cert)


@pytest.fixture
def store(tmp_path: Path, keys: Keyring) -> Iterator[SqlStore]:
    store = open_store(None, tmp_path, keys)
    yield store
    store.close()


def put(store: SqlStore, *bodies: bytes) -> None:
    def work(unit: UnitOfWork) -> None:
        for body in bodies:
            unit.put_payload(sha(body), body)

    store.write(work)


def raw(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# --- encryption at rest --------------------------------------------------------------------------


def test_a_body_is_kept_encrypted_and_read_back(tmp_path: Path, keys: Keyring) -> None:
    store = open_store(None, tmp_path, keys)
    put(store, BODY, BODY)  # a body kept twice is kept once
    assert store.payload(SHA) == BODY
    assert store.payload_digests() == [SHA]
    assert store.payload("0" * 64) is None
    store.close()
    data = files_bytes(tmp_path / "guichet.db")
    assert NATIONAL_NUMBER.encode() not in data
    assert NAME.encode() not in data
    [(content, key_id, wrapped)] = raw(
        tmp_path / "guichet.db",
        "SELECT p.content, k.key_id, k.wrapped_key FROM payloads p JOIN payload_keys k USING"
        " (sha256)",
    )
    assert isinstance(content, bytes) and len(content) == 12 + len(BODY) + 16
    assert key_id == keys.current.key_id and isinstance(wrapped, bytes) and len(wrapped) == 40
    # Read-only, as an auditor's copy is read.
    assert read_payload(tmp_path / "guichet.db", SHA, keys) == BODY


def test_each_body_has_its_own_data_key_and_nonce(store: SqlStore) -> None:
    other = BODY + b" "
    put(store, BODY, other)
    rows = raw(store.path, "SELECT p.content, k.wrapped_key FROM payloads p JOIN payload_keys k"
               " USING (sha256)")  # fmt: skip
    assert len({r[0][:12] for r in rows}) == 2  # type: ignore[index]
    assert len({r[1] for r in rows}) == 2


def test_a_body_under_another_digest_is_refused(store: SqlStore) -> None:
    with pytest.raises(PayloadError, match="does not hash"):
        store.write(lambda unit: unit.put_payload("a" * 64, BODY))
    assert store.payload_digests() == []


def test_a_store_without_the_master_key_keeps_no_body(tmp_path: Path) -> None:
    store = open_store(None, tmp_path)
    try:
        with pytest.raises(StoreError, match="master key"):
            put(store, BODY)
    finally:
        store.close()


def test_a_body_kept_in_clear_before_is_sealed_when_the_hub_opens_the_store(
    tmp_path: Path, keys: Keyring
) -> None:
    open_store(None, tmp_path).close()
    raw(tmp_path / "guichet.db", "INSERT INTO payloads (sha256, content) VALUES (?, ?)", SHA, BODY)
    assert NATIONAL_NUMBER.encode() in files_bytes(tmp_path / "guichet.db")
    store = open_store(None, tmp_path, keys)
    assert store.payload(SHA) == BODY
    store.close()
    assert NATIONAL_NUMBER.encode() not in files_bytes(tmp_path / "guichet.db")


# --- wrong keys, altered bytes -------------------------------------------------------------------


def test_a_wrong_master_key_is_refused_at_open_naming_both_keys(
    tmp_path: Path, store: SqlStore, keys: Keyring
) -> None:
    put(store, BODY)
    store.close()
    other = keyring(tmp_path / "other")
    with pytest.raises(ConfigurationError) as caught:
        open_store(None, tmp_path, other)
    assert keys.current.key_id in caught.value.detail
    assert other.current.key_id in caught.value.detail
    # An auditor's copy read with the wrong key: the digest and the key it needs are named.
    with pytest.raises(PayloadError) as read:
        read_payload(tmp_path / "guichet.db", SHA, other)
    assert read.value.code == "payload.unknown-key"
    assert SHA in read.value.detail and keys.current.key_id in read.value.detail


def test_the_hub_does_not_start_without_its_master_key(tmp_path: Path) -> None:
    config = HubConfig.load(Settings(data_dir=tmp_path / "data"))
    pki = init_dev_pki(tmp_path / "pki", config.parties.identities())
    pki.payload_key.unlink()
    with pytest.raises(ConfigurationError) as caught:
        Hub.open(config, pki=pki)
    assert str(pki.payload_key) in caught.value.detail
    assert "guichet certs init" in caught.value.detail
    assert not (config.data_dir / "guichet.db").exists()  # refused before anything was opened


@pytest.mark.parametrize("size", [0, 16, 33])
def test_a_master_key_of_the_wrong_size_is_refused(tmp_path: Path, size: int) -> None:
    (tmp_path / "k").write_bytes(os.urandom(size))
    with pytest.raises(ConfigurationError, match=f"holds {size}"):
        Keyring.from_files(tmp_path / "k")


def test_an_altered_ciphertext_fails_authentication_naming_the_digest(
    tmp_path: Path, keys: Keyring
) -> None:
    store = open_store(None, tmp_path, keys)
    put(store, BODY)
    store.close()
    [(content,)] = raw(tmp_path / "guichet.db", "SELECT content FROM payloads")
    assert isinstance(content, bytes)
    altered = content[:20] + bytes([content[20] ^ 1]) + content[21:]
    raw(tmp_path / "guichet.db", "UPDATE payloads SET content = ?", altered)
    store = open_store(None, tmp_path, keys)
    try:
        with pytest.raises(PayloadError) as caught:
            store.payload(SHA)
    finally:
        store.close()
    assert caught.value.code == "payload.corrupt"
    assert SHA in caught.value.detail and "AES-GCM authentication" in caught.value.detail


def test_a_ciphertext_moved_to_another_digest_fails(tmp_path: Path, keys: Keyring) -> None:
    other = b'{"another": "body"}'
    store = open_store(None, tmp_path, keys)
    put(store, BODY, other)
    store.close()
    # Give the other digest this body's ciphertext and key: the associated data no longer fits.
    for table, column in (("payloads", "content"), ("payload_keys", "wrapped_key")):
        raw(
            tmp_path / "guichet.db",
            f"UPDATE {table} SET {column} = (SELECT {column} FROM {table} WHERE sha256 = ?)"
            " WHERE sha256 = ?",
            SHA,
            sha(other),
        )
    with pytest.raises(PayloadError, match=f"payload {sha(other)}: .*AES-GCM"):
        read_payload(tmp_path / "guichet.db", sha(other), keys)
    assert read_payload(tmp_path / "guichet.db", SHA, keys) == BODY


def test_an_altered_wrapped_key_is_named(tmp_path: Path, keys: Keyring) -> None:
    store = open_store(None, tmp_path, keys)
    put(store, BODY)
    store.close()
    raw(tmp_path / "guichet.db", "UPDATE payload_keys SET wrapped_key = ?", os.urandom(40))
    with pytest.raises(PayloadError, match=f"payload {SHA}: its data key does not unwrap"):
        read_payload(tmp_path / "guichet.db", SHA, keys)


def test_a_rotated_master_key_still_unwraps_what_it_wrapped(tmp_path: Path) -> None:
    old = keyring(tmp_path, "old.key")
    store = open_store(None, tmp_path, old)
    put(store, BODY)
    store.close()
    new = Keyring(keyring(tmp_path, "new.key").current, (old.current,))
    store = open_store(None, tmp_path, new)
    put(store, b"after the rotation")
    assert store.payload(SHA) == BODY
    assert store.payload(sha(b"after the rotation")) == b"after the rotation"
    store.close()
    ids = dict(raw(tmp_path / "guichet.db", "SELECT sha256, key_id FROM payload_keys"))  # type: ignore[arg-type]
    assert ids == {SHA: old.current.key_id, sha(b"after the rotation"): new.current.key_id}


def test_the_key_id_names_the_key_without_revealing_it() -> None:
    key = os.urandom(32)
    master = MasterKey.of(key)
    assert master.key_id == MasterKey.of(key).key_id != MasterKey.of(os.urandom(32)).key_id
    assert master.key_id not in (hashlib.sha256(key).hexdigest(), key.hex())
    assert key.hex() not in repr(master)


# --- purge ---------------------------------------------------------------------------------------

OLD = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
NEW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
CUTOFF = datetime(2026, 2, 1, tzinfo=UTC)


def seal(store: SqlStore, signer: HubSigner, event: str, when: datetime, **fields: object) -> None:
    leaf = evidence.Leaf.of(evidence.record(event, iso(when), **fields))
    store.write(lambda unit: evidence.append(unit, signer, leaf, iso(when)))


def test_a_purge_erases_old_bodies_only_and_is_sealed(store: SqlStore, signer: HubSigner) -> None:
    inbound, canonical, out, response = b"in-1", b"canonical-1", b"shared out", b"answer-1"
    recent, unreferenced = b"in-2", b"kept, no record names it"
    put(store, inbound, canonical, out, response, recent, unreferenced)
    accepted = {"inbound": {"sha256": sha(inbound)}, "canonical": {"sha256": sha(canonical)}}
    seal(store, signer, "exchange.accepted", OLD, messageId="m1", **accepted,
         outbound=[{"receiver": "r", "sha256": sha(out)}])  # fmt: skip
    seal(
        store, signer, "delivery.delivered", NEW, messageId="m1", response={"sha256": sha(response)}
    )
    # A later message sends the same outbound body: it must outlive the first message.
    seal(store, signer, "exchange.accepted", NEW, messageId="m2", inbound={"sha256": sha(recent)},
         outbound=[{"receiver": "r", "sha256": sha(out)}])  # fmt: skip
    [(wrapped,)] = raw(
        store.path, "SELECT wrapped_key FROM payload_keys WHERE sha256 = ?", sha(inbound)
    )
    assert isinstance(wrapped, bytes)

    result = purge(store, signer, CUTOFF, by={"user": "auditor-1"})

    gone = sorted(sha(b) for b in (inbound, canonical, response))
    assert list(result.digests) == gone
    assert result.unreferenced == 1
    for body in (inbound, canonical, response):
        with pytest.raises(PayloadPurgedError) as caught:
            store.payload(sha(body))
        assert caught.value.code == "payload.purged"
        assert (
            "purged" in caught.value.detail and f"leaf {result.leaf_index}" in caught.value.detail
        )
    for body in (out, recent, unreferenced):
        assert store.payload(sha(body)) == body
    # One sealed record says what was erased, before when, by whom.
    leaves = store.leaves()
    assert result.leaf_index == len(leaves) - 1
    record = json.loads(leaves[-1].record)
    assert record["event"] == "payload.purged"
    assert record["digests"] == gone and record["count"] == 3
    assert record["before"] == "2026-02-01T00:00:00Z" and record["by"] == {"user": "auditor-1"}
    assert verify_log(leaves, store.checkpoints(), signer.certificate).ok
    # A second purge finds nothing and seals nothing.
    again = purge(store, signer, CUTOFF)
    assert (again.digests, again.leaf_index) == ((), None)
    assert len(store.leaves()) == len(leaves)
    # The destroyed key leaves no trace in the files.
    store.erase_freed()
    store.close()
    data = files_bytes(store.path)
    assert wrapped not in data and b"in-1" not in data


def test_a_body_used_again_while_purging_is_kept(store: SqlStore, signer: HubSigner) -> None:
    put(store, b"old body")
    seal(
        store,
        signer,
        "exchange.accepted",
        OLD,
        messageId="m1",
        inbound={"sha256": sha(b"old body")},
    )

    class Interleaved:
        """The store as purge sees it, with a new message sealed between its read and its write."""

        def leaves(self, start: int = 0, end: int | None = None) -> list[object]:
            return store.leaves(start, end)  # type: ignore[return-value]

        def payload_digests(self) -> list[str]:
            found = store.payload_digests()
            seal(store, signer, "exchange.accepted", NEW, messageId="m2",
                 outbound=[{"sha256": sha(b"old body")}])  # fmt: skip
            return found

        def write(self, work: object) -> object:
            return store.write(work)  # type: ignore[arg-type]

    result = purge(Interleaved(), signer, CUTOFF)  # type: ignore[arg-type]
    assert result.digests == () and result.leaf_index is None
    assert store.payload(sha(b"old body")) == b"old body"


def test_a_date_in_the_future_or_malformed_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="future"):
        parse_before((datetime.now(UTC) + timedelta(days=1)).date().isoformat())
    with pytest.raises(ConfigurationError, match="expected a date"):
        parse_before("31/01/2026")
    assert parse_before("2026-01-31") == datetime(2026, 1, 31, tzinfo=UTC)


# --- the master key file -------------------------------------------------------------------------


def test_certs_init_writes_the_master_key_once_and_never_replaces_it(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path, [])
    key = pki.payload_key.read_bytes()
    assert len(key) == 32 and pki.payload_key.stat().st_mode & 0o777 == 0o600
    init_dev_pki(tmp_path, [], force=True)  # a new CA does not erase every body
    assert pki.payload_key.read_bytes() == key


def test_certs_init_adds_a_master_key_to_an_older_pki(tmp_path: Path) -> None:
    from gateway.cli import main

    pki = init_dev_pki(tmp_path, [])
    pki.payload_key.unlink()
    ca = pki.ca_cert.read_bytes()
    assert main(["certs", "init", "--dir", str(tmp_path)]) == 0
    assert len(pki.payload_key.read_bytes()) == 32
    assert pki.ca_cert.read_bytes() == ca  # nothing else replaced
    assert main(["certs", "init", "--dir", str(tmp_path)]) == 1  # now a PKI exists: refused


# --- the whole hub -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_hub_keeps_bodies_encrypted_and_audit_purge_erases_them(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
    assert body["application"]["applicant"]["nationalRegisterNumber"] == NATIONAL_NUMBER
    message_id = str(uuid.uuid4())
    body["header"].update(messageId=message_id, caseReference=f"SP-TEST-{uuid.uuid4().hex[:8]}")
    with running_hub(data_dir, delivery_backoff_s=0.05) as live:
        with live.client("be-platform") as client:
            response = client.post("/v1/messages", json=body)
        assert response.status_code == 202, response.text
        store = live.hub.store
        subject = body["header"]["caseReference"]

        def done() -> bool:  # the whole case, REST and SOAP, every delivery made
            rows = store.messages_for_subject(subject)
            return sorted(r.type for r in rows) == sorted(CASE_TYPES) and all(
                d.state == "delivered" for r in rows for d in store.deliveries(r.id)
            )

        assert wait_until(done)
        # Flanders got it, translated: the hub read back what it keeps encrypted.
        flanders = live.sandbox.offices["be-vlg-wse"].wait_for(lambda r: r.message_id == message_id)
        assert NATIONAL_NUMBER in flanders.body.decode()
        records = [json.loads(leaf.record) for leaf in store.leaves()]
        accepted = next(r for r in records if r.get("messageId") == message_id)
        digests = [accepted["inbound"]["sha256"], accepted["canonical"]["sha256"]]
        digests += [o["sha256"] for o in accepted["outbound"]]
        for digest in digests:
            assert sha(store.payload(digest) or b"") == digest
    database = HubConfig.load(Settings(data_dir=data_dir)).data_dir / "guichet.db"
    [(kept,)] = raw(database, "SELECT COUNT(*) FROM payloads")
    data = files_bytes(database)
    assert NATIONAL_NUMBER.encode() not in data
    assert NAME.encode() not in data and b"Scheldeware" not in data

    verify = guichet("audit", "verify", "--data-dir", str(data_dir))
    assert verify.returncode == 0, verify.stderr
    purged = guichet(
        "audit", "purge", "--before", iso(datetime.now(UTC)), "--data-dir", str(data_dir)
    )
    assert purged.returncode == 0, purged.stderr
    assert f"purged {kept} bodies" in purged.stdout, purged.stdout
    verify = guichet("audit", "verify", "--data-dir", str(data_dir))
    assert verify.returncode == 0, verify.stderr
    again = guichet(
        "audit", "purge", "--before", iso(datetime.now(UTC)), "--data-dir", str(data_dir)
    )
    assert again.returncode == 0 and "nothing to purge" in again.stdout, again.stdout + again.stderr
    future = guichet("audit", "purge", "--before", "2999-01-01", "--data-dir", str(data_dir))
    assert future.returncode == 1 and "future" in future.stderr and "Traceback" not in future.stderr

    pki = DevPki.at(data_dir / "pki")
    keys = Keyring.from_files(pki.payload_key)
    for digest in digests:
        with pytest.raises(PayloadPurgedError, match="purged"):
            read_payload(database, digest, keys)
    store = open_store(None, data_dir, keys)
    try:
        assert store.payload_digests() == []
        record = json.loads(store.leaves()[-1].record)
    finally:
        store.close()
    assert record["event"] == "payload.purged" and set(digests) <= set(record["digests"])
    assert record["by"]["command"] == "guichet audit purge"


def test_a_delivery_of_a_purged_body_is_dead_lettered_not_retried(
    store: SqlStore, signer: HubSigner
) -> None:
    from adapters import DeliveryResult, Outbound
    from gateway.outbox import Outbox, RetryPolicy
    from gateway.store import MessageRow

    class Receiver:
        def __init__(self) -> None:
            self.calls: list[Outbound] = []

        def deliver(self, outbound: Outbound) -> DeliveryResult:
            self.calls.append(outbound)
            return DeliveryResult("delivered", 202, b"", None, 1.0)

        def close(self) -> None:
            pass

    put(store, b"old body")
    seal(
        store,
        signer,
        "exchange.accepted",
        OLD,
        messageId="m1",
        outbound=[{"sha256": sha(b"old body")}],
    )

    def pending(unit: UnitOfWork) -> None:
        row = MessageRow("m1", "s", "t", "SP-1", "tr", None, iso(OLD), "b" * 64, 0, "{}")
        unit.insert_message(row)
        unit.add_delivery("m1", "r", sha(b"old body"), "application/json", iso(OLD))

    store.write(pending)
    assert purge(store, signer, CUTOFF).digests == (sha(b"old body"),)
    receiver = Receiver()
    box = Outbox(store, {"r": receiver}, signer, RetryPolicy(), clock=lambda: NEW)  # type: ignore[dict-item]
    assert box.run_once() == 1
    (delivery,) = store.deliveries("m1")
    assert delivery.state == "dead" and receiver.calls == []
    assert delivery.last_error is not None and "payload.purged" in delivery.last_error
