"""Audit bundles from a real hub's store: export, verify, tampering caught and named, and an
independent check of the signatures with openssl following docs/audit-format.md alone."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import sqlite3
import subprocess
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.certs import DevPki
from gateway.cli import main
from gateway.demo import CASE_TYPES
from gateway.testing import running_hub, wait_until
from tests.conftest import EXAMPLES, guichet

pytestmark = pytest.mark.slow


def _post(live, body: dict[str, object]) -> int:  # type: ignore[no-untyped-def]
    with live.client("be-platform") as client:
        return int(client.post("/v1/messages", json=body).status_code)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> Path:
    """A data dir with a whole case (REST and SOAP, with the back offices' answers), a rejected
    message, and three checkpoints; the hub is closed before the tests read it."""
    data_dir = tmp_path_factory.mktemp("store")
    shutil.copytree(pki.directory, data_dir / "pki")
    with running_hub(data_dir, pki=DevPki.at(data_dir / "pki"), delivery_backoff_s=0.05) as live:
        body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
        subject = f"SP-AUDIT-{uuid.uuid4().hex[:8]}"
        body["header"].update(messageId=str(uuid.uuid4()), caseReference=subject)
        assert _post(live, body) == 202
        live.hub.checkpoint()
        hub_store = live.hub.store

        def done() -> bool:
            rows = hub_store.messages_for_subject(subject)
            return sorted(r.type for r in rows) == sorted(CASE_TYPES) and all(
                d.state == "delivered" for r in rows for d in hub_store.deliveries(r.id)
            )

        assert wait_until(done)
        live.hub.checkpoint()
        assert _post(live, {"not": "a message"}) >= 400
        live.hub.checkpoint()
    return data_dir


def _run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _copy(store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    return copy


def _export(
    capsys: pytest.CaptureFixture[str], data_dir: Path, out: Path, *extra: str
) -> dict[str, object]:
    code, _, err = _run(
        capsys, "audit", "export", "--data-dir", data_dir, "--out", out, "--with-payloads", *extra
    )
    assert code == 0, err
    with zipfile.ZipFile(out) as archive:
        manifest: dict[str, object] = json.loads(archive.read("manifest.json"))
    return manifest


@pytest.fixture(scope="module")
def bundle(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle.zip"
    assert main(["audit", "export", "--data-dir", str(store), "--out", str(out),
                 "--with-payloads", "--from", "1"]) == 0  # fmt: skip
    return out


def test_a_bundle_exports_and_verifies(
    store: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with zipfile.ZipFile(bundle) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        names = set(archive.namelist())
    leaves = sqlite3.connect(store / "guichet.db").execute("SELECT COUNT(*) FROM evidence")
    total = leaves.fetchone()[0]
    assert manifest["range"] == {"first": 1, "last": total - 1}
    assert manifest["treeSize"] == total
    assert len(manifest["checkpoints"]) == 3
    assert len(manifest["consistency"]) == 2
    assert manifest["payloads"] and all(manifest["payloads"].values())
    # Every schema and mapping file an exchange used is in it, by its SHA-256.
    assert any(path.startswith("schemas/") for path in manifest["artefacts"].values())
    assert any(path.startswith("mappings/") for path in manifest["artefacts"].values())
    assert {f"records/{i}.json" for i in range(1, total)} <= names
    assert "records/0.json" not in names
    code, out, err = _run(capsys, "audit", "verify", bundle, "--ca", store / "pki" / "ca.pem")
    assert code == 0, err
    assert out.rstrip().endswith(": OK")
    code, out, err = _run(capsys, "audit", "verify", "--data-dir", store)
    assert code == 0, err


def test_the_same_range_exports_the_same_bytes(
    store: Path, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again = tmp_path / "again.zip"
    _export(capsys, store, again, "--from", "1")
    with zipfile.ZipFile(bundle) as one, zipfile.ZipFile(again) as two:
        assert {n: one.read(n) for n in one.namelist() if n != "manifest.json"} == {
            n: two.read(n) for n in two.namelist() if n != "manifest.json"
        }


def test_a_range_by_time_and_a_range_no_checkpoint_covers(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(store / "guichet.db")
    times = [r[0] for r in conn.execute("SELECT signed_at FROM evidence ORDER BY leaf_index")]
    manifest = _export(capsys, store, tmp_path / "t.zip", "--from", times[2], "--to", times[4])
    # Times are those of the events (an exchange is signed at its receipt), so the log is only
    # nearly in time order: from a time is the first leaf at or after it, to a time the last
    # leaf at or before it.
    first = min(i for i, t in enumerate(times) if t >= times[2])
    last = max(i for i, t in enumerate(times) if t <= times[4])
    assert manifest["range"] == {"first": first, "last": last}
    assert first <= 2 and last >= 4
    code, _, err = _run(
        capsys, "audit", "export", "--data-dir", store, "--to", str(len(times)),
        "--out", tmp_path / "x.zip",
    )  # fmt: skip
    assert code == 1
    assert "audit.range" in err
    assert not (tmp_path / "x.zip").exists()


def test_the_command_exits_non_zero_on_a_bad_bundle(bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    _rewrite(bundle, bad, lambda files: files.pop("records/3.json"))
    for target, expected in ((bundle, 0), (bad, 1)):
        done = guichet("audit", "verify", target)
        assert done.returncode == expected, done.stderr
    assert "leaf 3: records/3.json is missing from the bundle" in done.stderr


# -- independent verification, following docs/audit-format.md only -------------------------------


def _openssl(*args: str | Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *map(str, args)], capture_output=True, check=False)


def test_openssl_verifies_a_checkpoint_and_a_receipt_as_the_document_says(
    bundle: Path, tmp_path: Path
) -> None:
    # No gateway code below: unzip, JSON, string formatting, hashlib and openssl.
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(tmp_path / "b")
    root = tmp_path / "b"
    manifest = json.loads((root / "manifest.json").read_bytes())
    pubkey = tmp_path / "hub-key.pem"
    pubkey.write_bytes(
        _openssl("x509", "-in", root / "certs/chain.pem", "-pubkey", "-noout").stdout
    )
    der = _openssl("pkey", "-pubin", "-in", pubkey, "-outform", "DER").stdout
    assert hashlib.sha256(der).hexdigest() == manifest["logId"]  # section 2

    size = manifest["treeSize"]
    checkpoint = json.loads((root / f"checkpoints/{size}.json").read_bytes())
    statement = (
        f'{{"logId":"{checkpoint["logId"]}","rootHash":"{checkpoint["rootHash"]}",'
        f'"time":"{checkpoint["time"]}","treeSize":{checkpoint["treeSize"]:d}}}'
    )
    (tmp_path / "statement").write_text(statement)
    (tmp_path / "sig.der").write_bytes(base64.b64decode(checkpoint["signature"]))
    verified = _openssl(
        "dgst", "-sha256", "-verify", pubkey, "-signature", tmp_path / "sig.der",
        tmp_path / "statement",
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert b"Verified OK" in verified.stdout
    # The same signature over another tree size does not verify.
    (tmp_path / "forged").write_text(
        statement.replace(f'"treeSize":{size}', f'"treeSize":{size + 1}')
    )
    forged = _openssl(
        "dgst", "-sha256", "-verify", pubkey, "-signature", tmp_path / "sig.der",
        tmp_path / "forged",
    )  # fmt: skip
    assert forged.returncode != 0

    # A receipt: the leaf hash recomputed from the record's bytes, its statement, openssl.
    index = manifest["range"]["first"]
    record = (root / f"records/{index}.json").read_bytes()
    receipt = json.loads((root / f"receipts/{index}.json").read_bytes())
    leaf_hash = hashlib.sha256(b"\x00" + record).hexdigest()
    assert leaf_hash == receipt["leafHash"]
    (tmp_path / "receipt").write_text(
        f'{{"leafHash":"{leaf_hash}","leafIndex":{index:d},'
        f'"logId":"{manifest["logId"]}","time":"{receipt["time"]}"}}'
    )
    (tmp_path / "receipt.der").write_bytes(base64.b64decode(receipt["signature"]))
    verified = _openssl(
        "pkeyutl", "-verify", "-pubin", "-inkey", pubkey, "-rawin", "-digest", "sha256",
        "-in", tmp_path / "receipt", "-sigfile", tmp_path / "receipt.der",
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr

    # The record's inclusion in the checkpoint, by RFC 9162 §2.1.3.2 written out here.
    proof = json.loads((root / f"proofs/inclusion/{index}.json").read_bytes())
    fn, sn, r = index, proof["treeSize"] - 1, bytes.fromhex(leaf_hash)
    for sibling in map(bytes.fromhex, proof["auditPath"]):
        if fn % 2 or fn == sn:
            r = hashlib.sha256(b"\x01" + sibling + r).digest()
            while fn % 2 == 0 and fn:
                fn, sn = fn // 2, sn // 2
        else:
            r = hashlib.sha256(b"\x01" + r + sibling).digest()
        fn, sn = fn // 2, sn // 2
    assert sn == 0 and r.hex() == checkpoint["rootHash"]


# -- tampering with a bundle ----------------------------------------------------------------------

Files = dict[str, bytes]


def _rewrite(source: Path, target: Path, change: Callable[[Files], object]) -> None:
    with zipfile.ZipFile(source) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    change(files)
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)


def _flip(content: bytes, at: int = 20) -> bytes:
    return content[:at] + bytes([content[at] ^ 0x01]) + content[at + 1 :]


def _manifest(files: Files) -> dict[str, object]:
    manifest: dict[str, object] = json.loads(files["manifest.json"])
    return manifest


def _set_manifest(files: Files, manifest: dict[str, object]) -> None:
    files["manifest.json"] = json.dumps(manifest).encode()


def _swap(files: Files, a: str, b: str) -> None:
    files[a], files[b] = files[b], files[a]


def _reorder_whole_leaves(files: Files) -> None:
    # Records, receipts and proofs swapped together, indices rewritten: the signatures hold
    # the index, so the move shows.
    for folder in ("records", "receipts", "proofs/inclusion"):
        _swap(files, f"{folder}/4.json", f"{folder}/5.json")
    for index in (4, 5):
        receipt = json.loads(files[f"receipts/{index}.json"])
        receipt["leafIndex"] = index
        files[f"receipts/{index}.json"] = json.dumps(receipt).encode()


def _alter_checkpoint(files: Files) -> None:
    size = _manifest(files)["treeSize"]
    checkpoint = json.loads(files[f"checkpoints/{size}.json"])
    checkpoint["rootHash"] = "00" * 32
    files[f"checkpoints/{size}.json"] = json.dumps(checkpoint).encode()


def _middle_checkpoint(files: Files) -> int:
    sizes = _manifest(files)["checkpoints"]
    assert isinstance(sizes, list)
    return int(sizes[1])


def _delete_checkpoint_and_its_mention(files: Files) -> None:
    manifest = _manifest(files)
    middle = _middle_checkpoint(files)
    del files[f"checkpoints/{middle}.json"]
    manifest["checkpoints"] = [s for s in manifest["checkpoints"] if s != middle]  # type: ignore[attr-defined]
    _set_manifest(files, manifest)


def _first(files: Files, folder: str) -> str:
    return sorted(n for n in files if n.startswith(folder))[0]


def _truncate_log(files: Files) -> None:
    # The last records gone and the manifest's range shortened to hide it: what remains
    # still proves itself, but records/… the manifest still names as checkpointed are absent.
    last = _manifest(files)["range"]["last"]  # type: ignore[index]
    for index in (last - 1, last):
        for folder in ("records", "receipts", "proofs/inclusion"):
            del files[f"{folder}/{index}.json"]


def _alter_proof(files: Files) -> None:
    proof = json.loads(files["proofs/inclusion/6.json"])
    proof["auditPath"][0] = "11" * 32
    files["proofs/inclusion/6.json"] = json.dumps(proof).encode()


def _alter_consistency(files: Files) -> None:
    name = _first(files, "proofs/consistency/")
    proof = json.loads(files[name])
    proof["path"][-1] = "22" * 32
    files[name] = json.dumps(proof).encode()


BUNDLE_TAMPERING: list[tuple[str, Callable[[Files], object], str]] = [
    (
        "alter a record byte",
        lambda f: f.update({"records/5.json": _flip(f["records/5.json"])}),
        "leaf 5 (records/5.json): record does not hash to its leaf hash",
    ),
    (
        "delete a record",
        lambda f: f.pop("records/5.json"),
        "leaf 5: records/5.json is missing from the bundle",
    ),
    (
        "reorder two records",
        lambda f: _swap(f, "records/4.json", "records/5.json"),
        "leaf 4 (records/4.json): record does not hash to its leaf hash",
    ),
    ("reorder two whole leaves", _reorder_whole_leaves, "leaf 4: signature does not verify"),
    ("truncate the log", _truncate_log, "is missing from the bundle"),
    ("alter a checkpoint", _alter_checkpoint, "signature does not verify"),
    (
        "delete a checkpoint",
        lambda f: f.pop(f"checkpoints/{_middle_checkpoint(f)}.json"),
        "is missing from the bundle",
    ),
    (
        "delete a checkpoint and its mention",
        _delete_checkpoint_and_its_mention,
        "consistency with checkpoint",
    ),
    ("alter an inclusion proof", _alter_proof, "leaf 6: not included in checkpoint"),
    ("alter a consistency proof", _alter_consistency, "not consistent with checkpoint"),
    (
        "alter a payload",
        lambda f: f.update({(n := _first(f, "payloads/")): _flip(f[n])}),
        "content does not hash to its name",
    ),
    ("delete a payload", lambda f: f.pop(_first(f, "payloads/")), "is missing from the bundle"),
    (
        "alter an artefact",
        lambda f: f.update({(n := _first(f, "artefacts/")): _flip(f[n])}),
        "content does not hash to its name",
    ),
    ("delete an artefact", lambda f: f.pop(_first(f, "artefacts/")), "missing from the bundle"),
    ("add a file", lambda f: f.update({"records/notes.txt": b"x"}), "file records/notes.txt"),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    [pytest.param(c, e, id=name) for name, c, e in BUNDLE_TAMPERING],
)
def test_tampering_with_a_bundle_is_caught_and_named(
    bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[Files], object],
    expected: str,
) -> None:
    target = tmp_path / "tampered.zip"
    _rewrite(bundle, target, change)
    code, out, err = _run(capsys, "audit", "verify", target)
    assert code == 1
    assert out.rstrip().endswith("FAILED")
    assert expected in err, err
    # The first problem names the item: a leaf, a checkpoint, an artefact, a payload or a file.
    first = err.splitlines()[0]
    named = ("leaf ", "checkpoint ", "artefact ", "payload ", "file ", "manifest")
    assert first.startswith(named) or "leaf " in first, first


def test_a_cut_zip_is_caught(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut.zip"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    code, _, err = _run(capsys, "audit", "verify", cut)
    assert code == 1
    assert "cut.zip: not a readable zip archive" in err


def test_another_hubs_chain_is_caught(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.certs import init_dev_pki

    other = init_dev_pki(tmp_path / "other", [])
    chain = other.signing_cert.read_bytes() + other.ca_cert.read_bytes()
    target = tmp_path / "other.zip"
    _rewrite(bundle, target, lambda f: f.update({"certs/chain.pem": chain}))
    code, _, err = _run(capsys, "audit", "verify", target)
    assert (code, err.splitlines()[0].startswith("manifest: logId")) == (1, True), err
    # And a genuine bundle checked against another CA than the hub's fails on the chain.
    code, _, err = _run(capsys, "audit", "verify", bundle, "--ca", other.ca_cert)
    assert code == 1
    assert "certificate chain: the chain does not end at the trusted CA" in err


# -- tampering with a store -----------------------------------------------------------------------


def _sql(data_dir: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    conn = sqlite3.connect(data_dir / "guichet.db")
    with conn:
        for statement, params in statements:
            conn.execute(statement, params)
    conn.close()


def _one(data_dir: Path, query: str) -> tuple[object, ...]:
    conn = sqlite3.connect(data_dir / "guichet.db")
    row: tuple[object, ...] = conn.execute(query).fetchone()
    conn.close()
    return row


def _store_flip_record(d: Path) -> str:
    (record,) = _one(d, "SELECT record FROM evidence WHERE leaf_index = 5")
    assert isinstance(record, bytes)
    _sql(d, ("UPDATE evidence SET record = ? WHERE leaf_index = 5", (_flip(record),)))
    return "leaf 5: record does not hash to its leaf hash"


def _store_delete_record(d: Path) -> str:
    _sql(d, ("DELETE FROM evidence WHERE leaf_index = 5", ()))
    return "leaf 5 is missing (found 6)"


def _store_reorder(d: Path) -> str:
    columns = "leaf_hash, record, signed_at, signature"
    four = _one(d, f"SELECT {columns} FROM evidence WHERE leaf_index = 4")
    five = _one(d, f"SELECT {columns} FROM evidence WHERE leaf_index = 5")
    update = (
        "UPDATE evidence SET leaf_hash = ?, record = ?, signed_at = ?, signature = ?"
        " WHERE leaf_index = ?"
    )
    _sql(d, (update, (*five, 4)), (update, (*four, 5)))
    return "leaf 4: signature does not verify"


def _store_truncate(d: Path) -> str:
    (size,) = _one(d, "SELECT MAX(tree_size) FROM checkpoints")
    assert isinstance(size, int)
    _sql(d, ("DELETE FROM evidence WHERE leaf_index >= ?", (size - 1,)))
    return f"checkpoint {size}: the log has only {size - 1} leaves"


def _store_alter_checkpoint(d: Path) -> str:
    (size,) = _one(d, "SELECT MIN(tree_size) FROM checkpoints")
    _sql(d, ("UPDATE checkpoints SET time = '2020-01-01T00:00:00Z' WHERE tree_size = ?", (size,)))
    return f"checkpoint {size}: signature does not verify"


def _store_alter_payload(d: Path) -> str:
    sha, content = _one(d, "SELECT sha256, content FROM payloads ORDER BY sha256 LIMIT 1")
    assert isinstance(content, bytes)
    _sql(d, ("UPDATE payloads SET content = ? WHERE sha256 = ?", (_flip(content, 5), sha)))
    # Kept encrypted: AES-GCM, which authenticates the body with its digest, refuses it.
    return f"payload {sha}: cannot be read (payload.corrupt"


def _store_alter_artefact(d: Path) -> str:
    sha, path, content = _one(
        d, "SELECT sha256, path, content FROM artefacts ORDER BY sha256 LIMIT 1"
    )
    assert isinstance(content, bytes)
    _sql(d, ("UPDATE artefacts SET content = ? WHERE sha256 = ?", (content + b" ", sha)))
    return f"artefact {sha} ({path}): content does not hash to its name"


def _store_delete_artefact(d: Path) -> str:
    (sha,) = _one(d, "SELECT sha256 FROM artefacts ORDER BY sha256 LIMIT 1")
    _sql(d, ("DELETE FROM artefacts WHERE sha256 = ?", (sha,)))
    return f"leaf 0: names artefact {sha}"


def _store_delete_payload(d: Path) -> str:
    # A body erased outside `guichet audit purge`: its row and its key gone, no sealed purge.
    leaf, sha = next(
        (index, sha)
        for index, record in (
            (r[0], json.loads(r[1]))
            for r in _all(d, "SELECT leaf_index, record FROM evidence ORDER BY leaf_index")
        )
        if record["event"] == "exchange.accepted"
        for sha in [record["inbound"]["sha256"]]
    )
    _sql(
        d,
        ("DELETE FROM payload_keys WHERE sha256 = ?", (sha,)),
        ("DELETE FROM payloads WHERE sha256 = ?", (sha,)),
    )
    return f"leaf {leaf}: payload {sha} is neither kept nor erased by a sealed purge"


def _all(data_dir: Path, query: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(data_dir / "guichet.db")) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.parametrize(
    "tamper",
    [
        _store_delete_payload,
        _store_flip_record,
        _store_delete_record,
        _store_reorder,
        _store_truncate,
        _store_alter_checkpoint,
        _store_alter_payload,
        _store_alter_artefact,
        _store_delete_artefact,
    ],
    ids=lambda f: f.__name__.removeprefix("_store_"),
)
def test_tampering_with_a_store_is_caught_and_named(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: Callable[[Path], str]
) -> None:
    copy = _copy(store, tmp_path)
    expected = tamper(copy)
    code, out, err = _run(capsys, "audit", "verify", "--data-dir", copy)
    assert code == 1
    assert out.rstrip().endswith("FAILED")
    assert err.splitlines()[0].startswith(expected), err


def test_a_deleted_checkpoint_is_caught_against_an_earlier_bundle(
    store: Path, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = _copy(store, tmp_path)
    with zipfile.ZipFile(bundle) as archive:
        middle = json.loads(archive.read("manifest.json"))["checkpoints"][1]
    _sql(copy, ("DELETE FROM checkpoints WHERE tree_size = ?", (middle,)))
    # Alone, the store still proves itself: a checkpoint fewer is not a lie in itself…
    assert _run(capsys, "audit", "verify", "--data-dir", copy)[0] == 0
    # …but the auditor who holds it from an earlier bundle sees it gone.
    code, _, err = _run(capsys, "audit", "verify", "--data-dir", copy, "--against", bundle)
    assert code == 1
    assert err.splitlines()[0] == f"trusted checkpoint {middle}: deleted from the store"
    code, _, _ = _run(capsys, "audit", "verify", "--data-dir", store, "--against", bundle)
    assert code == 0


def _rewrite_history(data_dir: Path, index: int) -> None:
    """What an insider holding the evidence key could do: change a record, re-hash and re-sign
    every leaf from there, and replace every checkpoint with one over the new tree."""
    from gateway import evidence
    from gateway.evidence import HubSigner

    pki = DevPki.at(data_dir / "pki")
    signer = HubSigner.from_files(pki.signing_key, pki.signing_cert)
    conn = sqlite3.connect(data_dir / "guichet.db")
    with conn:
        (raw,) = conn.execute(
            "SELECT record FROM evidence WHERE leaf_index = ?", (index,)
        ).fetchone()
        record = json.loads(raw)
        record["time"] = "2020-01-01T00:00:00.000000Z"
        leaf = evidence.Leaf.of(record)
        statement = evidence.receipt_statement(
            leaf.hash.hex(), index, record["time"], signer.key_id
        )
        conn.execute(
            "UPDATE evidence SET record = ?, leaf_hash = ?, signed_at = ?, signature = ?"
            " WHERE leaf_index = ?",
            (leaf.record, leaf.hash, record["time"], signer.sign(statement), index),
        )
        hashes = [
            bytes(r[0]) for r in conn.execute("SELECT leaf_hash FROM evidence ORDER BY leaf_index")
        ]
        sizes = [r[0] for r in conn.execute("SELECT tree_size FROM checkpoints")]
        conn.execute("DELETE FROM checkpoints")
        for size in sizes:
            root = evidence.merkle_root(hashes[:size]).hex()
            time = "2026-11-27T12:00:00.000000Z"
            signed = signer.sign(evidence.checkpoint_statement(size, root, time, signer.key_id))
            conn.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                (size, root, time, signer.key_id, signed),
            )
    conn.close()


def test_a_rewritten_history_fails_consistency_with_an_old_checkpoint(
    store: Path, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.bundle import MerkleTree, read_store, verify_consistency

    copy = _copy(store, tmp_path)
    _rewrite_history(copy, 1)  # inside the oldest checkpoint (size 2)
    # Re-signed with the hub's own key, the rewritten store is self-consistent…
    assert _run(capsys, "audit", "verify", "--data-dir", copy)[0] == 0
    # …but no consistency proof leads from an old checkpoint to the new tree.
    with zipfile.ZipFile(bundle) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        old_size = manifest["checkpoints"][0]
        old_root = json.loads(archive.read(f"checkpoints/{old_size}.json"))["rootHash"]
    snapshot = read_store(copy / "guichet.db")
    tree = MerkleTree([leaf.leaf_hash for leaf in snapshot.leaves])
    size = len(snapshot.leaves)
    proof = tree.consistency_proof(old_size, size)
    assert not verify_consistency(old_size, size, bytes.fromhex(old_root), tree.root(size), proof)
    # The same proof from the rewritten tree's own checkpoint holds: the failure is the rewrite.
    assert verify_consistency(old_size, size, tree.root(old_size), tree.root(size), proof)
    code, _, err = _run(capsys, "audit", "verify", "--data-dir", copy, "--against", bundle)
    assert code == 1
    assert err.splitlines()[0] == (
        f"trusted checkpoint {old_size}: the log does not extend it (history rewritten)"
    )
    # A bundle exported from the rewritten store verifies alone, not against the earlier one.
    forked = tmp_path / "forked.zip"
    _export(capsys, copy, forked)
    assert _run(capsys, "audit", "verify", forked)[0] == 0
    code, _, err = _run(capsys, "audit", "verify", forked, "--against", bundle)
    assert code == 1
    assert "has another root for this size (a forked log)" in err.splitlines()[0]


# -- RFC 3161 timestamp tokens of checkpoints -----------------------------------------------------

_TSA_CONFIG = """\
[ tsa ]
default_tsa = test_tsa
[ test_tsa ]
dir = {dir}
serial = $dir/serial
signer_cert = $dir/tsa.pem
certs = $dir/ca.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
digests = sha256
ess_cert_id_alg = sha256
"""


def _tsa(directory: Path, name: str) -> Path:
    """A throwaway timestamping authority made by openssl: its root CA and its config."""
    directory.mkdir(parents=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", f"/CN={name} CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    run("req", "-new", *ec, "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", f"/CN={name}")
    (directory / "tsa.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=critical,timeStamping\n"
    )
    run("x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "tsa.ext", "-out", "tsa.pem")  # fmt: skip
    (directory / "serial").write_text("01\n")
    (directory / "tsa.cnf").write_text(_TSA_CONFIG.format(dir=directory))
    return directory


def _token(tsa: Path, statement: bytes) -> bytes:
    """``openssl ts -query`` over the statement (SHA-256, certificates asked), ``-reply``, and
    the token alone (``-token_out``), as an authority gives it."""
    (tsa / "statement").write_bytes(statement)
    for args in (
        ("-query", "-data", "statement", "-sha256", "-cert", "-out", "q.tsq"),
        ("-reply", "-config", "tsa.cnf", "-queryfile", "q.tsq", "-out", "r.tsr"),
        ("-reply", "-in", "r.tsr", "-token_out", "-out", "token.der"),
    ):
        subprocess.run(["openssl", "ts", *args], cwd=tsa, check=True, capture_output=True)
    return (tsa / "token.der").read_bytes()


def _keep_tokens(data_dir: Path, tokens: dict[int, bytes]) -> None:
    """Store each token as the timestamping queue keeps it (table checkpoint_timestamps)."""
    conn = sqlite3.connect(data_dir / "guichet.db")
    with conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS checkpoint_timestamps"
            " (tree_size INTEGER PRIMARY KEY, token BLOB)"
        )
        columns = [r[1] for r in conn.execute("PRAGMA table_info(checkpoint_timestamps)")]
        for size, token in tokens.items():
            row = dict.fromkeys(columns, "2026-11-27T12:00:00.000000Z")
            row.update(tree_size=size, token=token)
            row.pop("attempts", None)
            row.pop("last_error", None)
            names = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            conn.execute(
                f"INSERT OR REPLACE INTO checkpoint_timestamps ({names}) VALUES ({marks})",
                tuple(row.values()),
            )
    conn.close()


@pytest.fixture(scope="module")
def stamped(store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A copy of the store whose checkpoints carry RFC 3161 tokens, its bundle, the TSA root."""
    from gateway import evidence

    base = tmp_path_factory.mktemp("stamped")
    copy = base / "data"
    shutil.copytree(store, copy)
    tsa = _tsa(base / "tsa", "Test TSA")
    conn = sqlite3.connect(copy / "guichet.db")
    rows = conn.execute("SELECT tree_size, root_hash, time, key_id FROM checkpoints").fetchall()
    conn.close()
    _keep_tokens(copy, {row[0]: _token(tsa, evidence.checkpoint_statement(*row)) for row in rows})
    out = base / "stamped.zip"
    assert main(["audit", "export", "--data-dir", str(copy), "--out", str(out)]) == 0
    return copy, out, tsa / "ca.pem"


def test_timestamp_tokens_travel_with_their_checkpoints_and_verify(
    stamped: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, out, tsa_ca = stamped
    with zipfile.ZipFile(out) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        archive.extractall(tmp_path / "b")
    assert manifest["timestamps"] == manifest["checkpoints"]
    for args in (("--tsa-ca", tsa_ca), ()):
        code, _, err = _run(capsys, "audit", "verify", out, *args)
        assert code == 0, err
        code, _, err = _run(capsys, "audit", "verify", "--data-dir", data_dir, *args)
        assert code == 0, err
    # As docs/audit-format.md section 4 says, with openssl alone.
    size = manifest["treeSize"]
    checkpoint = json.loads((tmp_path / "b" / f"checkpoints/{size}.json").read_bytes())
    (tmp_path / "statement").write_text(
        f'{{"logId":"{checkpoint["logId"]}","rootHash":"{checkpoint["rootHash"]}",'
        f'"time":"{checkpoint["time"]}","treeSize":{size:d}}}'
    )
    verified = _openssl(
        "ts", "-verify", "-token_in", "-in", tmp_path / "b" / f"checkpoints/{size}.tst",
        "-data", tmp_path / "statement", "-CAfile", tsa_ca,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert b"Verification: OK" in verified.stdout


def test_a_token_of_another_checkpoint_or_authority_is_caught(
    stamped: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir, out, _ = stamped
    with zipfile.ZipFile(out) as archive:
        sizes = json.loads(archive.read("manifest.json"))["checkpoints"]
    swapped = tmp_path / "swapped.zip"
    _rewrite(
        out,
        swapped,
        lambda f: _swap(f, f"checkpoints/{sizes[0]}.tst", f"checkpoints/{sizes[1]}.tst"),
    )
    code, _, err = _run(capsys, "audit", "verify", swapped)
    assert code == 1
    assert err.splitlines()[0].startswith(f"checkpoint {sizes[0]}: timestamp token:"), err
    assert "message imprint mismatch" in err
    altered = tmp_path / "altered.zip"
    name = f"checkpoints/{sizes[-1]}.tst"
    _rewrite(out, altered, lambda f: f.update({name: _flip(f[name], len(f[name]) - 10)}))
    code, _, err = _run(capsys, "audit", "verify", altered)
    assert code == 1
    assert err.splitlines()[0].startswith(f"checkpoint {sizes[-1]}: timestamp token:"), err
    # A genuine token checked against another authority's root fails.
    other = _tsa(tmp_path / "other", "Other TSA")
    code, _, err = _run(capsys, "audit", "verify", out, "--tsa-ca", other / "ca.pem")
    assert code == 1
    assert err.splitlines()[0].startswith(f"checkpoint {sizes[0]}: timestamp token:"), err
    # In the store too.
    copy = _copy(data_dir, tmp_path)
    conn = sqlite3.connect(copy / "guichet.db")
    tokens = dict(conn.execute("SELECT tree_size, token FROM checkpoint_timestamps").fetchall())
    conn.close()
    _keep_tokens(copy, {sizes[0]: tokens[sizes[1]]})
    code, _, err = _run(capsys, "audit", "verify", "--data-dir", copy)
    assert code == 1
    assert err.splitlines()[0].startswith(f"checkpoint {sizes[0]}: timestamp token:"), err


def test_a_truncated_store_is_not_exported(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = _copy(store, tmp_path)
    _store_truncate(copy)
    code, _, err = _run(
        capsys, "audit", "export", "--data-dir", copy, "--to", "3", "--out", tmp_path / "t.zip"
    )
    assert code == 1
    assert "covers more leaves than the store holds" in err


def test_the_demo_exports_and_verifies(tmp_path: Path) -> None:
    demo = guichet("demo", "--data-dir", tmp_path / "demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    out = tmp_path / "demo.zip"
    export = guichet(
        "audit", "export", "--data-dir", tmp_path / "demo", "--checkpoint", "--with-payloads",
        "--out", out,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    verify = guichet("audit", "verify", out, "--ca", tmp_path / "demo" / "pki" / "ca.pem")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.rstrip().endswith(": OK")


def test_a_member_twice_in_the_zip_is_caught(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "twice.zip"
    shutil.copy(bundle, target)
    with zipfile.ZipFile(target, "a") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("records/3.json", b'{"event":"forged"}')
    code, _, err = _run(capsys, "audit", "verify", target)
    assert code == 1
    assert err.splitlines()[0] == "file records/3.json: in the bundle twice"


def test_a_store_named_by_url_with_its_certificate(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = store / "pki"
    url = f"sqlite://{store / 'guichet.db'}"
    code, _, err = _run(
        capsys, "audit", "verify", "--store", url, "--cert", pki / "hub-signing.pem",
        "--ca", pki / "ca.pem",
    )  # fmt: skip
    assert code == 0, err
    # Another certificate than the evidence signer's is refused before any leaf is read.
    code, _, err = _run(capsys, "audit", "verify", "--store", url, "--cert", pki / "ca.pem")
    assert code == 1
    assert err.splitlines()[0].startswith("certificate chain: the certificate is no evidence")


def test_a_party_certificate_of_the_same_ca_signs_no_evidence(pki: DevPki) -> None:
    """A bundle's chain must begin with the hub's evidence signer: a party's certificate, even
    one the same CA issued, is refused (else a party could forge a bundle that verifies)."""
    from cryptography import x509

    from gateway.audit import verify_chain

    def cert(path: Path) -> x509.Certificate:
        return x509.load_pem_x509_certificate(path.read_bytes())

    ca = cert(pki.ca_cert)
    assert verify_chain([cert(pki.signing_cert), ca], ca) is None
    party = cert(pki.party("be-platform").cert)
    problem = verify_chain([party, ca], ca)
    assert problem is not None and "no evidence signer's" in problem


def test_a_bundle_exports_after_a_purge_and_still_verifies(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    copy = _copy(store, tmp_path)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    code, out, err = _run(capsys, "audit", "purge", "--before", now, "--data-dir", copy)
    assert code == 0, out + err
    manifest = _export(capsys, copy, tmp_path / "purged.zip", "--checkpoint")
    payloads = manifest["payloads"]
    assert isinstance(payloads, dict) and payloads and not any(payloads.values())
    code, _, err = _run(capsys, "audit", "verify", tmp_path / "purged.zip")
    assert code == 0, err
    code, _, err = _run(capsys, "audit", "verify", "--data-dir", copy)
    assert code == 0, err


def test_a_manifest_value_of_the_wrong_kind_is_named_not_a_traceback(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def wrong(files: Files) -> None:
        manifest = _manifest(files)
        manifest["payloads"] = [1]
        _set_manifest(files, manifest)

    target = tmp_path / "wrong.zip"
    _rewrite(bundle, target, wrong)
    code, _, err = _run(capsys, "audit", "verify", target)
    assert code == 1
    assert err.splitlines()[0] == "manifest: payloads must map each digest to true or false"
