"""Verification of the evidence log, from its rows alone and the hub's public certificate."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway import evidence
from gateway.store import LeafRow

__all__ = ["VerifyReport", "verify_log"]


@dataclass
class VerifyReport:
    leaves: int = 0
    checkpoints: int = 0
    root: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_log(
    leaves: Sequence[LeafRow], checkpoints: Sequence[dict[str, Any]], certificate: x509.Certificate
) -> VerifyReport:
    """Recompute every leaf hash, check every signature and every checkpoint's root.

    Stops at the first bad leaf and names it and why.
    """
    public_key = certificate.public_key()
    report = VerifyReport()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        report.problems.append("the hub certificate carries no ECDSA key")
        return report
    key_id = hashlib.sha256(
        public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()
    hashes: list[bytes] = []
    for expected_index, leaf in enumerate(leaves):
        if leaf.leaf_index != expected_index:
            report.problems.append(f"leaf {expected_index} is missing (found {leaf.leaf_index})")
            return report
        if leaf.key_id != key_id:
            report.problems.append(f"leaf {leaf.leaf_index}: signed by another key ({leaf.key_id})")
            return report
        if evidence.leaf_hash(leaf.record) != leaf.leaf_hash:
            report.problems.append(f"leaf {leaf.leaf_index}: record does not hash to its leaf hash")
            return report
        statement = evidence.receipt_statement(
            leaf.leaf_hash.hex(), leaf.leaf_index, leaf.signed_at, leaf.key_id
        )
        if not evidence.verify_signature(public_key, statement, leaf.signature):
            report.problems.append(f"leaf {leaf.leaf_index}: signature does not verify")
            return report
        hashes.append(leaf.leaf_hash)
    report.leaves = len(hashes)
    for checkpoint in checkpoints:
        size = checkpoint["tree_size"]
        if checkpoint["key_id"] != key_id:
            report.problems.append(f"checkpoint {size}: signed by another key")
            return report
        statement = evidence.checkpoint_statement(
            size, checkpoint["root_hash"], checkpoint["time"], checkpoint["key_id"]
        )
        if not evidence.verify_signature(public_key, statement, checkpoint["signature"]):
            report.problems.append(f"checkpoint {size}: signature does not verify")
            return report
        if size > len(hashes):
            report.problems.append(f"checkpoint {size}: the log has only {len(hashes)} leaves")
            return report
        if evidence.merkle_root(hashes[:size]).hex() != checkpoint["root_hash"]:
            report.problems.append(f"checkpoint {size}: root does not match the leaves")
            return report
        report.checkpoints += 1
    report.root = evidence.merkle_root(hashes).hex()
    return report
