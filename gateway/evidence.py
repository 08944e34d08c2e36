"""The evidence log's pure core: records, leaf hashes, the Merkle tree, signatures, receipts.

In the manner of RFC 6962/9162: a leaf is the RFC 8785 canonical JSON of an evidence record,
its hash ``SHA-256(0x00 ‖ leaf)``; an interior node ``SHA-256(0x01 ‖ left ‖ right)``. Each leaf is
signed by the hub (ECDSA P-256, SHA-256) over the canonical JSON of
``{"leafHash", "leafIndex", "logId", "time"}``: that signed statement is the receipt a sender
holds. Checkpoints sign ``{"logId", "rootHash", "time", "treeSize"}`` the same way.
docs/audit-format.md gives every byte.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.errors import ConfigurationError
from gateway.store import LeafRow

__all__ = [
    "Checkpoint",
    "HubSigner",
    "Receipt",
    "canonical_json",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "person_ref",
]


def _plain(value: Any) -> bool:
    """True when ``value`` holds only ASCII-keyed objects, arrays, strings, integers, booleans and
    nulls: for those, sorted-key compact JSON with raw non-ASCII text *is* RFC 8785 (floats and
    non-ASCII keys, whose JCS forms differ, take the reference implementation)."""
    if isinstance(value, dict):
        return all(k.isascii() and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, int):  # bool is an int too
        return -(2**53) < value < 2**53  # beyond, JCS has no exact number
    return value is None or isinstance(value, str)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical JSON bytes."""
    if _plain(value):
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode()
    return bytes(rfc8785.dumps(value))


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash of a list of leaf hashes (iterative, O(n))."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    # Pairing adjacent nodes level by level, carrying an odd last node up unchanged, gives the
    # same tree as RFC 6962's split at the largest power of two below n.
    level = list(leaves)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def person_ref(key: bytes, national_number: str) -> str:
    """The keyed hash by which a national number is searchable without being stored."""
    return hmac.new(key, national_number.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Receipt:
    """What a sender gets back for an accepted message: proof it entered the log."""

    message_id: str
    status: str  # accepted | duplicate
    leaf_index: int
    leaf_hash: str  # hex
    time: str
    key_id: str
    signature: str  # base64 DER ECDSA
    receivers: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Receipt:
        return cls(
            message_id=str(data["messageId"]),
            status=str(data["status"]),
            leaf_index=int(data["leafIndex"]),
            leaf_hash=str(data["leafHash"]),
            time=str(data["time"]),
            key_id=str(data["keyId"]),
            signature=str(data["signature"]),
            receivers=tuple(str(r) for r in data["receivers"]),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "status": self.status,
            "leafIndex": self.leaf_index,
            "leafHash": self.leaf_hash,
            "time": self.time,
            "keyId": self.key_id,
            "signature": self.signature,
            "receivers": list(self.receivers),
        }


def receipt_statement(leaf_hash_hex: str, leaf_index: int, time: str, key_id: str) -> bytes:
    return canonical_json(
        {"leafHash": leaf_hash_hex, "leafIndex": leaf_index, "logId": key_id, "time": time}
    )


def checkpoint_statement(tree_size: int, root_hex: str, time: str, key_id: str) -> bytes:
    return canonical_json(
        {"logId": key_id, "rootHash": root_hex, "time": time, "treeSize": tree_size}
    )


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    root_hash: str  # hex
    time: str
    key_id: str
    signature: str  # base64 DER


def sign_checkpoint(signer: HubSigner, tree_size: int, root_hex: str, time: str) -> Checkpoint:
    """A signed tree head: the hub's signature over ``checkpoint_statement`` (the one way every
    checkpoint is signed: on demand, in the background, before an export)."""
    statement = checkpoint_statement(tree_size, root_hex, time, signer.key_id)
    return Checkpoint(tree_size, root_hex, time, signer.key_id, signer.sign(statement))


class HubSigner:
    """The hub's evidence key: signs receipts and checkpoints, verifies them."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate):
        self._key = private_key
        self.certificate = certificate
        self.public_key = certificate.public_key()
        if not isinstance(self.public_key, ec.EllipticCurvePublicKey):
            raise ConfigurationError("the evidence certificate must carry an ECDSA key")
        spki = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        # Like a CT log id: the SHA-256 of the signing key's SubjectPublicKeyInfo.
        self.key_id = hashlib.sha256(spki).hexdigest()

    @classmethod
    def from_files(cls, key_path: Path, cert_path: Path) -> HubSigner:
        """Load the evidence key and its certificate; they must belong together."""
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot load the evidence key: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigurationError(f"{key_path}: the evidence key must be an ECDSA key")
        if key.public_key().public_numbers() != certificate.public_key().public_numbers():  # type: ignore[union-attr]
            raise ConfigurationError(f"{key_path} is not the key of {cert_path}")
        return cls(key, certificate)

    def sign(self, statement: bytes) -> str:
        signature = self._key.sign(statement, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()

    def verify(self, statement: bytes, signature_b64: str) -> bool:
        return verify_signature(self.public_key, statement, signature_b64)  # type: ignore[arg-type]


def verify_signature(
    public_key: ec.EllipticCurvePublicKey, statement: bytes, signature_b64: str
) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64), statement, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_moment(text: str) -> datetime:
    """An ISO 8601 / RFC 3339 time as the evidence writes them (``Z`` allowed); a time without a
    zone is UTC. Raises ``ValueError``."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(event: str, time: str, **fields: Any) -> dict[str, Any]:
    """An evidence record: the event, its time, and the fields given (None values dropped)."""
    body: dict[str, Any] = {"v": 1, "event": event, "time": time}
    body.update({k: v for k, v in fields.items() if v is not None})
    return body


@dataclass(frozen=True)
class Leaf:
    """An evidence record encoded as its leaf (RFC 8785 bytes) and hashed, ready to append."""

    record: bytes
    hash: bytes

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Leaf:
        encoded = canonical_json(record)
        return cls(encoded, leaf_hash(encoded))


class LeafAppender(Protocol):
    def next_leaf_index(self) -> int: ...
    def append_leaf(self, leaf: LeafRow) -> None: ...


def append(unit: LeafAppender, signer: HubSigner, leaf: Leaf, time: str) -> LeafRow:
    """Append a leaf inside the caller's transaction: its index is known only there, so the
    receipt's signature (over hash, index, time and key id) is made there too."""
    index = unit.next_leaf_index()
    statement = receipt_statement(leaf.hash.hex(), index, time, signer.key_id)
    row = LeafRow(index, leaf.hash, leaf.record, time, signer.key_id, signer.sign(statement))
    unit.append_leaf(row)
    return row
