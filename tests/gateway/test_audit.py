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
