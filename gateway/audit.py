"""Verification of the evidence log, from its rows alone and the hub's public certificate."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway import evidence, proofs
from gateway.certs import EVIDENCE_SIGNER_URI
from gateway.store import LeafRow

__all__ = [
    "VerifyReport",
    "evidence_certificate_problem",
    "key_id_of",
    "verify_chain",
    "verify_log",
]


@dataclass
class VerifyReport:
    """What a verification checked; ``problems`` holds the first bad item, named, and why."""

    leaves: int = 0
    checkpoints: int = 0
    root: str = ""
    problems: list[str] = field(default_factory=list)
    log_id: str = ""
    artefacts: int = 0
    payloads: int = 0
    trusted: int = 0  # checkpoints of an earlier bundle found unchanged

    @property
    def ok(self) -> bool:
        return not self.problems


def key_id_of(certificate: x509.Certificate) -> str:
    """The log id: hex SHA-256 of the DER SubjectPublicKeyInfo of the hub's evidence key."""
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def evidence_certificate_problem(certificate: x509.Certificate) -> str | None:
    """None when ``certificate`` is an evidence signer's: an ECDSA P-256 key and the SAN
    ``urn:be:guichet:evidence-signer`` (a party's or a role's certificate, even from the same
    CA, is not one); else why not."""
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return "the evidence certificate carries no ECDSA P-256 key"
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if uris != [EVIDENCE_SIGNER_URI]:
        return f"the certificate is no evidence signer's (its SAN must be {EVIDENCE_SIGNER_URI})"
    return None


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(constraints.ca)


def verify_chain(
    chain: Sequence[x509.Certificate], trusted_ca: x509.Certificate | None = None
) -> str | None:
    """None when each certificate is issued by the next and the last is a self-signed CA (the
    ``trusted_ca``, when given); else why not. The first one must carry an ECDSA P-256 key."""
    if not chain:
        return "no certificate"
    problem = evidence_certificate_problem(chain[0])
    if problem:
        return problem
    for position, (child, parent) in enumerate(zip(chain, [*chain[1:], chain[-1]], strict=True)):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            return (
                f"certificate {position} is not issued by the next one ({exc or 'bad signature'})"
            )
        if not _is_ca(parent):  # the issuer of each (the last issues itself)
            return f"certificate {min(position + 1, len(chain) - 1)} is not a CA"
    if trusted_ca is not None and chain[-1] != trusted_ca:
        return "the chain does not end at the trusted CA"
    return None


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
    key_id = key_id_of(certificate)
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
    tree = proofs.MerkleTree(hashes)  # built once: each checkpoint's root is then O(log² n)
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
        if tree.root(size).hex() != checkpoint["root_hash"]:
            report.problems.append(f"checkpoint {size}: root does not match the leaves")
            return report
        report.checkpoints += 1
    report.root = tree.root().hex()
    return report
