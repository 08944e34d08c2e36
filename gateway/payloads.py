"""The payload store's encryption, and the erasure of bodies past retention.

Each body kept beside the evidence log is encrypted with a data key of its own (256 bits, random),
AES-256-GCM, a random 96-bit nonce, and the body's SHA-256 (its 32 bytes) as associated data: a
ciphertext moved under another digest fails authentication. The stored blob is
``nonce (12) ‖ ciphertext ‖ tag (16)``. The data key is wrapped (RFC 3394 AES key wrap) by the
hub's master key and kept apart from the ciphertext, with the id of the master key that wraps it,
so that destroying the wrapped key erases the body, and master keys can be rotated: a
``Keyring`` holds the current key (which wraps) and older ones (which still unwrap).

The master key is a file of 32 random bytes that ``guichet certs init`` writes; the hub reads it,
never makes it. Its id is ``HMAC-SHA256(key, "guichet payload master key id")``, first 16 bytes in
hex: it names the key without revealing anything of it.

``guichet audit purge --before DATE`` (``purge``) destroys the keys and ciphertexts of the bodies
whose every referencing message was received before DATE, and seals one ``payload.purged`` record
naming the digests; the evidence, its proofs and its checkpoints are untouched.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from gateway import evidence
from gateway.errors import ConfigurationError, PayloadError, PayloadPurgedError
from gateway.evidence import HubSigner
from gateway.store import LeafRow

__all__ = [
    "MASTER_KEY_BYTES",
    "Keyring",
    "MasterKey",
    "PurgeResult",
    "SealedPayload",
    "open_payload",
    "purge",
    "purge_candidates",
    "seal_payload",
]

MASTER_KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID_LABEL = b"guichet payload master key id"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class MasterKey:
    """A master key (256-bit AES key) and its id."""

    key: bytes = field(repr=False)
    key_id: str

    @classmethod
    def of(cls, key: bytes) -> MasterKey:
        if len(key) != MASTER_KEY_BYTES:
            raise ValueError(f"a master key is {MASTER_KEY_BYTES} bytes, not {len(key)}")
        key_id = hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:32]
        return cls(key, key_id)

    @classmethod
    def from_file(cls, path: Path) -> MasterKey:
        try:
            key = path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"missing payload master key {path}; for development,"
                f" `guichet certs init --dir {path.parent}` writes it"
            ) from exc
        except OSError as exc:
            raise ConfigurationError(f"cannot read the payload master key {path}: {exc}") from exc
        if len(key) != MASTER_KEY_BYTES:
            raise ConfigurationError(
                f"{path}: a payload master key holds {MASTER_KEY_BYTES} bytes, it holds {len(key)}"
            )
        return cls.of(key)


@dataclass(frozen=True)
class Keyring:
    """The master key that wraps new data keys, and the older ones that still unwrap."""

    current: MasterKey
    older: tuple[MasterKey, ...] = ()

    @classmethod
    def from_files(cls, current: Path, older: Iterable[Path] = ()) -> Keyring:
        return cls(MasterKey.from_file(current), tuple(MasterKey.from_file(p) for p in older))

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(k.key_id for k in (self.current, *self.older))

    def get(self, key_id: str) -> MasterKey | None:
        return next((k for k in (self.current, *self.older) if k.key_id == key_id), None)

    def check_store(self, key_ids: Iterable[str], where: str) -> None:
        """Refuse a store whose bodies are wrapped by master keys this keyring lacks."""
        unknown = sorted(set(key_ids) - self.key_ids)
        if unknown:
            raise ConfigurationError(
                f"{where} holds bodies wrapped by master key {', '.join(unknown)}; this hub's"
                f" master key is {self.current.key_id}: not the key of this store (a wrong or"
                " replaced payload-master.key)"
            )


@dataclass(frozen=True)
class SealedPayload:
    """What is stored for one body: the ciphertext, and (elsewhere) its wrapped data key."""

    key_id: str
    wrapped_key: bytes
    ciphertext: bytes  # nonce ‖ ciphertext ‖ tag


def check_digest(sha256: str) -> bytes:
    if not _SHA256_HEX.fullmatch(sha256):
        raise PayloadError(f"{sha256!r} is not a SHA-256 in lowercase hex", code="payload.corrupt")
    return bytes.fromhex(sha256)


def seal_payload(keyring: Keyring, sha256: str, body: bytes) -> SealedPayload:
    """Encrypt ``body`` under a fresh data key wrapped by the current master key."""
    digest = check_digest(sha256)
    if hashlib.sha256(body).digest() != digest:
        raise PayloadError(f"payload {sha256}: the body does not hash to it")
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = nonce + AESGCM(data_key).encrypt(nonce, body, digest)
    master = keyring.current
    return SealedPayload(master.key_id, aes_key_wrap(master.key, data_key), ciphertext)


def open_payload(keyring: Keyring, sha256: str, sealed: SealedPayload) -> bytes:
    """Unwrap the data key, decrypt and authenticate the body, and check its digest."""
    digest = check_digest(sha256)
    master = keyring.get(sealed.key_id)
    if master is None:
        raise PayloadError(
            f"payload {sha256} is wrapped by master key {sealed.key_id}, which this hub does not"
            f" hold (it holds {', '.join(sorted(keyring.key_ids))})",
            code="payload.unknown-key",
        )
    try:
        data_key = aes_key_unwrap(master.key, sealed.wrapped_key)
    except (InvalidUnwrap, ValueError) as exc:
        raise PayloadError(
            f"payload {sha256}: its data key does not unwrap with master key {master.key_id}"
            " (the wrapped key was altered, or belongs to another key)",
            code="payload.corrupt",
        ) from exc
    blob = sealed.ciphertext
    try:
        body = AESGCM(data_key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], digest)
    except (InvalidTag, ValueError) as exc:
        raise PayloadError(
            f"payload {sha256}: the stored ciphertext fails AES-GCM authentication (altered, or"
            " moved from another digest)",
            code="payload.corrupt",
        ) from exc
    if hashlib.sha256(body).digest() != digest:  # pragma: no cover - GCM already binds the digest
        raise PayloadError(f"payload {sha256}: the body does not hash to it")
    return body


def purged_error(sha256: str, purged_at: str, leaf_index: int) -> PayloadPurgedError:
    return PayloadPurgedError(
        f"payload {sha256} was purged at {purged_at} (evidence leaf {leaf_index}): its key is"
        " destroyed and the body is gone; its digest stays in the log",
        extra={"sha256": sha256, "purgedAt": purged_at, "leafIndex": leaf_index},
    )


# --- purge ---------------------------------------------------------------------------------------


def parse_before(text: str, now: datetime | None = None) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an RFC 3339 date-time; never later than now."""
    try:
        moment = evidence.parse_moment(text)
    except ValueError as exc:
        raise ConfigurationError(
            f"--before {text!r}: expected a date (2026-01-31) or a date-time (2026-01-31T00:00:00Z)"
        ) from exc
    if moment > (now or datetime.now(UTC)):
        raise ConfigurationError(
            f"--before {text}: a date in the future would erase bodies still within retention"
        )
    return moment


def _digests(value: Any) -> Iterator[str]:
    """Every ``"sha256"`` string anywhere in a record."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "sha256" and isinstance(item, str):
                yield item
            else:
                yield from _digests(item)
    elif isinstance(value, list):
        for item in value:
            yield from _digests(item)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass
class _References:
    """Which messages refer to each kept body, as the log says."""

    received: dict[str, datetime] = field(default_factory=dict)  # message id → received at
    latest: dict[str, datetime] = field(default_factory=dict)  # digest → latest message receipt
    blocked: set[str] = field(default_factory=set)  # referenced by a record of no known message

    def add(self, leaves: Sequence[LeafRow], kept: set[str]) -> None:
        for leaf in leaves:
            record = json.loads(leaf.record)
            message_id = record.get("messageId")
            if record.get("event") == "exchange.accepted" and isinstance(message_id, str):
                self.received[message_id] = _time(record["time"])
            for digest in set(_digests(record)) & kept:
                received = self.received.get(message_id) if isinstance(message_id, str) else None
                if received is None:
                    self.blocked.add(digest)
                elif digest not in self.latest or self.latest[digest] < received:
                    self.latest[digest] = received


def purge_candidates(
    leaves: Sequence[LeafRow], kept: Iterable[str], before: datetime
) -> tuple[list[str], int]:
    """The kept bodies whose every referencing message was received before ``before``, and the
    number of kept bodies no record refers to (left alone)."""
    kept_set = set(kept)
    references = _References()
    references.add(leaves, kept_set)
    purgeable = sorted(
        digest
        for digest, received in references.latest.items()
        if received < before and digest not in references.blocked
    )
    unreferenced = len(kept_set - set(references.latest) - references.blocked)
    return purgeable, unreferenced


class PurgeStore(Protocol):
    def leaves(self, start: int = 0, end: int | None = None) -> list[LeafRow]: ...
    def payload_digests(self) -> list[str]: ...
    def write(self, work: Any) -> Any: ...


@dataclass(frozen=True)
class PurgeResult:
    digests: tuple[str, ...]
    leaf_index: int | None  # the payload.purged record; None when there was nothing to purge
    unreferenced: int


def actor() -> dict[str, str]:
    """Who purges: the command, and the operating-system account that ran it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = f"uid:{os.getuid()}"
    return {"command": "guichet audit purge", "user": user}


def purge(
    store: PurgeStore,
    signer: HubSigner,
    before: datetime,
    *,
    now: datetime | None = None,
    by: Mapping[str, str] | None = None,
) -> PurgeResult:
    """Erase the bodies of messages received before ``before``; seal it as ``payload.purged``.

    The log is read outside the store's writer; inside it, only the records appended since are
    read again, and a body they refer to is kept (it has just been used again).
    """
    scanned = store.leaves()
    candidates, unreferenced = purge_candidates(scanned, store.payload_digests(), before)
    if not candidates:
        return PurgeResult((), None, unreferenced)
    moment = now or datetime.now(UTC)
    time = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    who = dict(by or actor())

    def work(unit: Any) -> tuple[tuple[str, ...], int | None]:
        index = unit.next_leaf_index()
        recent = unit.leaves(len(scanned), index) if index > len(scanned) else []
        used_again = {d for leaf in recent for d in _digests(json.loads(leaf.record))}
        digests = [d for d in candidates if d not in used_again]
        digests = unit.purge_payloads(digests, time, index)
        if not digests:
            return (), None
        leaf = evidence.Leaf.of(
            evidence.record(
                "payload.purged",
                time,
                before=before.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                digests=digests,
                count=len(digests),
                by=who,
            )
        )
        row = evidence.append(unit, signer, leaf, time)
        return tuple(digests), row.leaf_index

    digests, index = store.write(work)
    return PurgeResult(digests, index, unreferenced)
