"""verify_log finds every kind of tampering, and names the first bad record."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gateway import evidence
from gateway.audit import verify_log
from gateway.certs import init_dev_pki
from gateway.evidence import HubSigner
from gateway.store import LeafRow


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> HubSigner:
    pki = init_dev_pki(tmp_path_factory.mktemp("pki"), [])
    return HubSigner.from_files(pki.signing_key, pki.signing_cert)


def make_log(signer: HubSigner, n: int = 6) -> tuple[list[LeafRow], list[dict[str, object]]]:
    leaves = []
    for index in range(n):
        record = evidence.canonical_json({"event": "test", "n": index})
        digest = evidence.leaf_hash(record)
        time = f"2026-11-27T10:00:0{index}Z"
        statement = evidence.receipt_statement(digest.hex(), index, time, signer.key_id)
        leaves.append(LeafRow(index, digest, record, time, signer.key_id, signer.sign(statement)))
    root = evidence.merkle_root([leaf.leaf_hash for leaf in leaves[:4]]).hex()
    statement = evidence.checkpoint_statement(4, root, "2026-11-27T11:00:00Z", signer.key_id)
    checkpoint = {
        "tree_size": 4,
        "root_hash": root,
        "time": "2026-11-27T11:00:00Z",
        "key_id": signer.key_id,
        "signature": signer.sign(statement),
    }
    return leaves, [checkpoint]


def test_an_intact_log_verifies(signer: HubSigner) -> None:
    leaves, checkpoints = make_log(signer)
    report = verify_log(leaves, checkpoints, signer.certificate)
    assert report.ok, report.problems
    assert (report.leaves, report.checkpoints) == (6, 1)


def _tamper_record(leaves: list[LeafRow]) -> None:
    record = json.loads(leaves[2].record)
    record["n"] = 99
    leaves[2] = dataclasses.replace(leaves[2], record=evidence.canonical_json(record))


def _tamper_everything_consistently(leaves: list[LeafRow]) -> None:
    # Rewriting a record and its leaf hash still fails: the hub's signature no longer matches.
    record = evidence.canonical_json({"event": "forged"})
    leaves[3] = dataclasses.replace(leaves[3], record=record, leaf_hash=evidence.leaf_hash(record))


def _drop_a_leaf(leaves: list[LeafRow]) -> None:
    del leaves[1]


def _resign_time(leaves: list[LeafRow]) -> None:
    leaves[4] = dataclasses.replace(leaves[4], signed_at="2020-01-01T00:00:00Z")


def _other_key(leaves: list[LeafRow]) -> None:
    leaves[0] = dataclasses.replace(leaves[0], key_id="00" * 32)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (_tamper_record, "leaf 2: record does not hash"),
        (_tamper_everything_consistently, "leaf 3: signature does not verify"),
        (_drop_a_leaf, "leaf 1 is missing"),
        (_resign_time, "leaf 4: signature does not verify"),
        (_other_key, "leaf 0: signed by another key"),
    ],
)
def test_tampered_leaves_are_named(signer: HubSigner, tamper: object, expected: str) -> None:
    leaves, checkpoints = make_log(signer)
    tamper(leaves)  # type: ignore[operator]
    report = verify_log(leaves, checkpoints, signer.certificate)
    assert not report.ok
    assert report.problems[0].startswith(expected)


def test_a_checkpoint_over_other_leaves_fails(signer: HubSigner) -> None:
    leaves, checkpoints = make_log(signer)
    checkpoints[0]["root_hash"] = "00" * 32
    report = verify_log(leaves, checkpoints, signer.certificate)
    assert report.problems == ["checkpoint 4: signature does not verify"]


def test_a_truncated_log_fails_its_checkpoint(signer: HubSigner) -> None:
    leaves, checkpoints = make_log(signer)
    report = verify_log(leaves[:3], checkpoints, signer.certificate)
    assert report.problems == ["checkpoint 4: the log has only 3 leaves"]


def test_another_hubs_certificate_verifies_nothing(signer: HubSigner, tmp_path: Path) -> None:
    leaves, checkpoints = make_log(signer)
    other = init_dev_pki(tmp_path, [])
    other_signer = HubSigner.from_files(other.signing_key, other.signing_cert)
    report = verify_log(leaves, checkpoints, other_signer.certificate)
    assert not report.ok


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    from gateway.errors import ConfigurationError

    one, two = init_dev_pki(tmp_path / "1", []), init_dev_pki(tmp_path / "2", [])
    with pytest.raises(ConfigurationError, match="is not the key of"):
        HubSigner.from_files(one.signing_key, two.signing_cert)


# -- RFC 9162 proofs (gateway.bundle) -------------------------------------------------------------


def _hashes(n: int, salt: bytes = b"") -> list[bytes]:
    return [evidence.leaf_hash(salt + str(i).encode()) for i in range(n)]


def test_roots_are_rfc_6962_roots() -> None:
    from gateway.bundle import MerkleTree

    for n in range(0, 40):
        hashes = _hashes(n)
        assert MerkleTree(hashes).root(n) == evidence.merkle_root(hashes)


def test_every_inclusion_proof_verifies_and_no_other_leaf_does() -> None:
    from gateway.bundle import MerkleTree, verify_inclusion

    for n in range(1, 34):
        hashes = _hashes(n)
        tree = MerkleTree(hashes)
        root = tree.root(n)
        for m in range(n):
            proof = tree.inclusion_proof(m, n)
            assert verify_inclusion(hashes[m], m, n, proof, root), (m, n)
            assert not verify_inclusion(evidence.leaf_hash(b"other"), m, n, proof, root)
            if n > 1:
                assert not verify_inclusion(hashes[m], (m + 1) % n, n, proof, root)
                assert not verify_inclusion(hashes[m], m, n, proof[:-1], root)


def test_every_consistency_proof_verifies_and_a_rewritten_tree_does_not() -> None:
    from gateway.bundle import MerkleTree, verify_consistency

    for n in range(1, 34):
        hashes = _hashes(n)
        tree = MerkleTree(hashes)
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            old_root, new_root = tree.root(m), tree.root(n)
            assert verify_consistency(m, n, old_root, new_root, proof), (m, n)
            # The same sizes over a history changed at one leaf below m: no proof connects them.
            rewritten = list(hashes)
            rewritten[m - 1] = evidence.leaf_hash(b"rewritten")
            other = MerkleTree(rewritten)
            forged = other.consistency_proof(m, n)
            assert not verify_consistency(m, n, old_root, other.root(n), forged), (m, n)
            if m < n:
                assert not verify_consistency(m, n, old_root, new_root, forged[:-1] or [old_root])
    assert verify_consistency(0, 5, b"", b"", [])


def test_proofs_of_leaves_outside_the_tree_are_refused() -> None:
    from gateway.bundle import MerkleTree

    tree = MerkleTree(_hashes(4))
    with pytest.raises(ValueError, match="index 4 is not below the tree size 4"):
        tree.inclusion_proof(4, 4)
    with pytest.raises(ValueError, match="second 5 is beyond the tree"):
        tree.consistency_proof(3, 5)
