"""Audit bundles: a range of the evidence log exported as one self-contained zip, and its check.

A bundle holds the records of the range as their exact RFC 8785 bytes with the hub's signature
over each, every checkpoint (with the place of its RFC 3161 token), an inclusion proof of each
record against the latest checkpoint, consistency proofs between consecutive checkpoints, the
hub's certificate chain, the schema and mapping files the records name (by SHA-256) and, for an
authorised auditor, the payload bodies. docs/audit-format.md specifies it to the byte; an auditor
can check it with standard tools alone, or with ``guichet audit verify bundle.zip``.

The Merkle proofs (RFC 9162 §2.1.3, §2.1.4) are gateway.proofs', seen as booleans through four
functions (``MerkleTree.inclusion_proof``, ``MerkleTree.consistency_proof``,
``verify_inclusion``, ``verify_consistency``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway import evidence, proofs
from gateway.audit import VerifyReport, key_id_of, verify_chain, verify_log
from gateway.errors import (
    GatewayError,
    InvalidProofError,
    PayloadError,
    PayloadPurgedError,
)
from gateway.evidence import HubSigner
from gateway.payloads import Keyring
from gateway.store import LeafRow, sqlite_path
from gateway.store.sql import Connection, Dialect, _leaves
from gateway.store.sql import payload as _payload
from gateway.store.sqlite import SQLITE, readonly

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "BundleError",
    "MerkleTree",
    "StoreSnapshot",
    "artefact_refs",
    "export_bundle",
    "openssl_timestamp_check",
    "payload_refs",
    "read_store",
    "resolve_range",
    "sign_checkpoint",
    "trusted_checkpoints",
    "verify_bundle",
    "verify_consistency",
    "verify_inclusion",
    "verify_store",
]

BUNDLE_FORMAT = "guichet-audit-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
CHAIN = "certs/chain.pem"
# Fixed zip entry times: the same export gives the same bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class BundleError(GatewayError):
    """An export that cannot be made (no such range, no checkpoint covering it)."""

    default_code = "audit.range"


# -- Merkle proofs (RFC 9162 §2.1.3 and §2.1.4): gateway.proofs, as booleans -------------------

MerkleTree = proofs.MerkleTree


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2."""
    try:
        proofs.verify_inclusion(leaf_hash, index, size, proof, root)
    except (InvalidProofError, ValueError):
        return False
    return True


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2 (a tree of size 0 is consistent with every tree, with an empty proof)."""
    if first == 0:
        return not proof
    try:
        proofs.verify_consistency(first, second, first_root, second_root, proof)
    except (InvalidProofError, ValueError):
        return False
    return True


# -- what records reference -----------------------------------------------------------------------


def artefact_refs(record: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 → path of every schema and mapping file a record names.

    ``configuration.loaded`` names every file in force (``files``); an exchange names the schema
    (``schema.sha256``) and mapping files (``mapping[].sha256``) it used, at any depth.
    """
    refs: dict[str, str] = {}
    if record.get("event") == "configuration.loaded":
        files = record.get("files")
        if isinstance(files, dict):
            refs.update({str(sha): str(path) for path, sha in files.items()})

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            schema = value.get("schema")
            if isinstance(schema, dict) and isinstance(schema.get("sha256"), str):
                refs.setdefault(schema["sha256"], f"schema {schema.get('id', '?')}")
            mapping = value.get("mapping")
            if isinstance(mapping, list):
                for part in mapping:
                    if isinstance(part, dict) and isinstance(part.get("sha256"), str):
                        refs.setdefault(part["sha256"], str(part.get("file", "mapping")))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(record)
    return refs


def payload_refs(record: Mapping[str, Any]) -> list[str]:
    """The digests of the bodies a record says the hub kept: an accepted exchange's inbound,
    canonical and outbound bodies, a delivery's response (a rejected body is never kept)."""
    found: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, dict) and isinstance(value.get("sha256"), str):
            found.append(value["sha256"])

    event = record.get("event")
    if event == "exchange.accepted":
        add(record.get("inbound"))
        add(record.get("canonical"))
        for out in record.get("outbound") or []:
            add(out)
    elif isinstance(event, str) and event.startswith("delivery."):
        add(record.get("response"))
    return list(dict.fromkeys(found))


# -- a store, read-only ---------------------------------------------------------------------------

PayloadSource = Callable[[str], bytes | None]


@dataclass
class StoreSnapshot:
    """What an export or a store check reads from a store: the log, checkpoints, artefacts."""

    leaves: list[LeafRow]
    checkpoints: list[dict[str, Any]]  # tree_size, root_hash, time, key_id, signature[, token]
    artefacts: dict[str, tuple[str, bytes]]  # sha256 → (path, content)
    # sha256 → the SHA-256 of the kept body, decrypted (see ``read_store``; the bodies themselves
    # are not held); empty without the master key.
    payloads: dict[str, str] = field(default_factory=dict)
    # sha256 → why a kept body cannot be read (altered ciphertext or wrapped key, unknown key).
    unreadable: dict[str, str] = field(default_factory=dict)
    # the digests of every body kept (read or not): a named body must be kept or sealed purged.
    kept: set[str] = field(default_factory=set)


def read_store(where: Path | str, keyring: Keyring | None = None) -> StoreSnapshot:
    """Read a store without writing to it (an auditor's copy is never written to): a SQLite
    file (a path or ``sqlite:///path``) opened read-only, or a PostgreSQL database
    (``postgresql://…``) read in read-only transactions.

    A checkpoint's RFC 3161 token (DER TimeStampToken) becomes its ``timestamp_token`` and
    travels with it into bundles. The kept bodies are encrypted: with the hub's ``keyring`` each
    is decrypted (AES-GCM authenticates it with its digest) for the digest check of
    ``verify_store``; without it they are not read (purged bodies never are).
    """
    path = sqlite_path(where) if isinstance(where, str) else where
    if path is not None:
        with readonly(path) as conn:
            return _snapshot(conn, SQLITE, keyring)
    from gateway.store.postgres import read_only

    with read_only(str(where)) as (conn, dialect):
        return _snapshot(conn, dialect, keyring)


def _snapshot(conn: Connection, dialect: Dialect, keyring: Keyring | None) -> StoreSnapshot:
    leaves = _leaves(conn, dialect)
    checkpoints = _checkpoint_rows(conn)
    try:  # the RFC 3161 tokens, kept apart since store version 2
        tokens = dict(
            conn.execute(
                "SELECT tree_size, token FROM checkpoint_timestamps WHERE token IS NOT NULL"
            ).fetchall()
        )
    except dialect.errors:
        tokens = {}
    for checkpoint in checkpoints:
        token = tokens.get(checkpoint["tree_size"])
        if token is not None:
            checkpoint["timestamp_token"] = bytes(token)
    artefacts = {
        r[0]: (r[1], bytes(r[2]))
        for r in conn.execute("SELECT sha256, path, content FROM artefacts")
    }
    payloads: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    kept = {r[0] for r in conn.execute("SELECT sha256 FROM payloads").fetchall()}
    if keyring is not None:
        for sha in sorted(kept):
            try:
                body = _payload(conn, dialect, sha, keyring)
            except PayloadError as exc:
                unreadable[sha] = f"{exc.code}: {exc.detail}"
                continue
            if body is not None:
                payloads[sha] = hashlib.sha256(body).hexdigest()
    return StoreSnapshot(leaves, checkpoints, artefacts, payloads, unreadable, kept)


def _checkpoint_rows(conn: Connection) -> list[dict[str, Any]]:
    """Checkpoint rows whole (every column, whatever version of the store wrote them)."""
    cursor = conn.execute("SELECT * FROM checkpoints ORDER BY tree_size")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def sign_checkpoint(leaves: Sequence[LeafRow], signer: HubSigner, now: str) -> dict[str, Any]:
    """A checkpoint of ``leaves`` (size, root, time), signed as ``Hub.checkpoint`` signs one."""
    root = evidence.merkle_root([leaf.leaf_hash for leaf in leaves]).hex()
    return dataclasses.asdict(evidence.sign_checkpoint(signer, len(leaves), root, now))


# -- export ---------------------------------------------------------------------------------------


def _moment(text: str) -> datetime | None:
    try:
        return evidence.parse_moment(text)
    except ValueError:
        return None


def resolve_range(leaves: Sequence[LeafRow], start: str | None, end: str | None) -> tuple[int, int]:
    """``--from``/``--to`` as leaf indices, both included.

    Each is a leaf index or an ISO 8601 time: from a time, the first record signed at or after
    it; to a time, the last record signed at or before it. By default, the whole log.
    """
    if not leaves:
        raise BundleError("the log is empty: there is nothing to export")

    def bound(text: str, *, first: bool) -> int:
        if text.isdigit():
            return int(text)
        moment = _moment(text)
        if moment is None:
            raise BundleError(f"{text!r} is neither a leaf index nor an ISO 8601 time")
        times = [_moment(leaf.signed_at) for leaf in leaves]
        if first:
            return next(
                (i for i, t in enumerate(times) if t is not None and t >= moment), len(leaves)
            )
        return max((i for i, t in enumerate(times) if t is not None and t <= moment), default=-1)

    first = 0 if start is None else bound(start, first=True)
    last = len(leaves) - 1 if end is None else bound(end, first=False)
    if not 0 <= first <= last < len(leaves):
        raise BundleError(
            f"no records from {start or 0} to {end or 'the end'} (the log holds leaves 0 to"
            f" {len(leaves) - 1})"
        )
    return first, last


def _json(value: Any) -> bytes:
    return evidence.canonical_json(value)


def export_bundle(
    snapshot: StoreSnapshot,
    chain_pem: bytes,
    first: int,
    last: int,
    out: Path,
    *,
    exported_at: str,
    payload_source: PayloadSource | None = None,
) -> dict[str, Any]:
    """Write leaves ``first``..``last`` (both included) as a bundle; return its manifest.

    Every record exported must be covered by a checkpoint: proofs are against the latest one.
    ``payload_source`` (the store's ``payload``) adds the bodies the records name.
    """
    leaves = snapshot.leaves
    checkpoints = sorted(snapshot.checkpoints, key=lambda c: int(c["tree_size"]))
    if not checkpoints or int(checkpoints[-1]["tree_size"]) <= last:
        covered = int(checkpoints[-1]["tree_size"]) if checkpoints else 0
        raise BundleError(
            f"leaf {last} is not covered by a checkpoint (the latest covers {covered} leaves);"
            " sign one first (`guichet audit export --checkpoint`) or export less"
        )
    if int(checkpoints[-1]["tree_size"]) > len(leaves):
        raise BundleError(
            f"checkpoint {checkpoints[-1]['tree_size']} covers more leaves than the store holds"
            f" ({len(leaves)}): the log was truncated; `guichet audit verify` names what is wrong"
        )
    certificate = x509.load_pem_x509_certificates(chain_pem)[0]
    log_id = key_id_of(certificate)
    tree = MerkleTree([leaf.leaf_hash for leaf in leaves])
    latest = int(checkpoints[-1]["tree_size"])

    files: dict[str, bytes] = {CHAIN: chain_pem}
    artefacts: dict[str, str] = {}
    payloads: dict[str, bool] = {}
    for leaf in leaves[first : last + 1]:
        index = leaf.leaf_index
        files[f"records/{index}.json"] = leaf.record
        files[f"receipts/{index}.json"] = _json(
            {
                "leafIndex": index,
                "leafHash": leaf.leaf_hash.hex(),
                "time": leaf.signed_at,
                "logId": leaf.key_id,
                "signature": leaf.signature,
            }
        )
        files[f"proofs/inclusion/{index}.json"] = _json(
            {
                "leafIndex": index,
                "treeSize": latest,
                "auditPath": [h.hex() for h in tree.inclusion_proof(index, latest)],
            }
        )
        record = json.loads(leaf.record)
        for sha, path in artefact_refs(record).items():
            stored = snapshot.artefacts.get(sha)
            if stored is not None:
                artefacts[sha] = stored[0]
                files[f"artefacts/{sha}"] = stored[1]
            else:
                artefacts.setdefault(sha, path)
        if payload_source is not None:
            for sha in payload_refs(record):
                if payloads.get(sha):
                    continue
                try:
                    body = payload_source(sha)
                except PayloadPurgedError:  # erased past retention: listed as not included
                    body = None
                payloads[sha] = body is not None
                if body is not None:
                    files[f"payloads/{sha}"] = body
    sizes = []
    for checkpoint in checkpoints:
        size = int(checkpoint["tree_size"])
        sizes.append(size)
        files[f"checkpoints/{size}.json"] = _json(
            {
                "treeSize": size,
                "rootHash": checkpoint["root_hash"],
                "time": checkpoint["time"],
                "logId": checkpoint["key_id"],
                "signature": checkpoint["signature"],
            }
        )
        token = checkpoint.get("timestamp_token")
        if token:
            files[f"checkpoints/{size}.tst"] = bytes(token)
    consistency = []
    for older, newer in itertools.pairwise(sizes):
        if older == 0:
            continue
        consistency.append([older, newer])
        files[f"proofs/consistency/{older}-{newer}.json"] = _json(
            {
                "fromSize": older,
                "toSize": newer,
                "path": [h.hex() for h in tree.consistency_proof(older, newer)],
            }
        )
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "logId": log_id,
        "exportedAt": exported_at,
        "range": {"first": first, "last": last},
        "treeSize": latest,
        "checkpoints": sizes,
        "timestamps": [s for s in sizes if f"checkpoints/{s}.tst" in files],
        "consistency": consistency,
        "artefacts": dict(sorted(artefacts.items())),
        "payloads": dict(sorted(payloads.items())),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, content in [(MANIFEST, _json(manifest)), *sorted(files.items())]:
                archive.writestr(zipfile.ZipInfo(name, _ZIP_TIME), content, zipfile.ZIP_DEFLATED)
        partial.replace(out)  # a bundle appears whole or not at all
    finally:
        partial.unlink(missing_ok=True)
    return manifest


# -- verification of a bundle ---------------------------------------------------------------------


class _BadError(Exception):
    """The first thing found wrong; verification stops there."""


def _hex32(value: Any, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise _BadError(f"{what}: not a 32-byte hex hash")
    return raw


class _Archive:
    def __init__(self, path: Path) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise _BadError(f"{path.name}: not a readable zip archive ({exc})") from exc
        listed = self.zip.namelist()
        self.names = set(listed)
        if len(listed) != len(self.names):  # a zip may hold one name twice: which one is read?
            twice = sorted(n for n in self.names if listed.count(n) > 1)[0]
            raise _BadError(f"file {twice}: in the bundle twice")
        self.read_names: set[str] = set()

    def read(self, name: str, what: str) -> bytes:
        if name not in self.names:
            raise _BadError(f"{what}: {name} is missing from the bundle")
        self.read_names.add(name)
        try:
            return self.zip.read(name)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:  # CRC error: altered bytes
            raise _BadError(f"{what}: {name} cannot be read ({exc})") from exc

    def json(self, name: str, what: str) -> dict[str, Any]:
        try:
            value = json.loads(self.read(name, what))
        except ValueError as exc:
            raise _BadError(f"{what}: {name} is not JSON") from exc
        if not isinstance(value, dict):
            raise _BadError(f"{what}: {name} is not a JSON object")
        return value


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _BadError(f"{what}: not a non-negative integer")
    return value


@dataclass(frozen=True)
class _Checkpoint:
    size: int
    root: bytes
    time: str
    signature: str


def _checkpoint_of(archive: _Archive, size: int, log_id: str, public_key: Any) -> _Checkpoint:
    what = f"checkpoint {size}"
    data = archive.json(f"checkpoints/{size}.json", what)
    if data.get("treeSize") != size:
        raise _BadError(f"{what}: its file names tree size {data.get('treeSize')!r}")
    if data.get("logId") != log_id:
        raise _BadError(f"{what}: signed by another key ({data.get('logId')!r})")
    root = _hex32(data.get("rootHash"), f"{what}: rootHash")
    time, signature = data.get("time"), data.get("signature")
    if not isinstance(time, str) or not isinstance(signature, str):
        raise _BadError(f"{what}: time or signature missing")
    statement = evidence.checkpoint_statement(size, root.hex(), time, log_id)
    if not evidence.verify_signature(public_key, statement, signature):
        raise _BadError(f"{what}: signature does not verify")
    return _Checkpoint(size, root, time, signature)


TimestampCheck = Callable[[bytes, bytes], str | None]
"""(checkpoint statement, RFC 3161 token DER) → None when the token holds, else why not."""


def openssl_timestamp_check(tsa_ca: Path | None = None) -> TimestampCheck:
    """Check a token as docs/audit-format.md tells an auditor to: ``openssl ts -verify``.

    With ``tsa_ca`` the token must chain to that authority's root. Without it, the certificates
    the token carries are taken as they are (``-partial_chain``): the imprint and the token's
    signature are checked, the authority's identity is not.
    """

    def check(statement: bytes, token: bytes) -> str | None:
        openssl = shutil.which("openssl")
        if openssl is None:
            return "openssl is not installed here: the token cannot be checked"
        with tempfile.TemporaryDirectory(prefix="guichet-ts-") as folder:
            work = Path(folder)
            (work / "statement").write_bytes(statement)
            (work / "token.der").write_bytes(token)
            if tsa_ca is not None:
                trust = ["-CAfile", str(tsa_ca)]
            else:
                # Fixed arguments, no shell: the token is only ever a file openssl reads.
                carried = subprocess.run(  # noqa: S603
                    [openssl, "pkcs7", "-inform", "DER", "-in", "token.der", "-print_certs",
                     "-out", "carried.pem"],
                    cwd=work, capture_output=True, check=False, timeout=30,
                )  # fmt: skip
                if carried.returncode != 0:
                    return "not a DER CMS token"
                trust = ["-CAfile", "carried.pem", "-partial_chain"]
            done = subprocess.run(  # noqa: S603
                [openssl, "ts", "-verify", "-token_in", "-in", "token.der",
                 "-data", "statement", *trust],
                cwd=work, capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip
        if done.returncode == 0:
            return None
        # openssl's error lines: <id>:error:<code>:<library>:<function>:<reason>:<file>:<line>:
        reasons = [
            line.split(":")[5]
            for line in done.stderr.splitlines()
            if ":error:" in line and line.count(":") >= 6
        ]
        return "openssl ts -verify fails" + (f" ({reasons[0]})" if reasons else "")

    return check


def verify_bundle(
    path: Path,
    *,
    trusted_ca: x509.Certificate | None = None,
    against: Path | None = None,
    check_timestamp: TimestampCheck | None = None,
) -> VerifyReport:
    """Recompute everything a bundle claims; stop at the first bad item and name it and why.

    ``trusted_ca``: the chain must end at this CA. ``against``: an earlier bundle whose
    checkpoints the auditor already holds; each must still be in this one, with the same root.
    ``check_timestamp``: how to check an RFC 3161 token, when the bundle carries any.
    """
    report = VerifyReport()
    with _first_failure(report, "bundle"):
        archive = _Archive(path)
        with archive.zip:
            _verify_bundle(archive, report, trusted_ca, check_timestamp)
            if against is not None:
                _verify_against(archive, path, against, report, trusted_ca)
    return report


@contextlib.contextmanager
def _first_failure(report: VerifyReport, what: str) -> Iterator[None]:
    """Stop at the first bad item and put it in ``report``: a named one (``_BadError``), or a
    value of the wrong kind where the format says what it must be (``<what>: malformed``)."""
    try:
        yield
    except _BadError as bad:
        report.problems.append(str(bad))
    except (TypeError, ValueError, KeyError, AttributeError, subprocess.SubprocessError) as exc:
        report.problems.append(f"{what}: malformed ({type(exc).__name__}: {exc})")


def _verify_bundle(
    archive: _Archive,
    report: VerifyReport,
    trusted_ca: x509.Certificate | None,
    check_timestamp: TimestampCheck | None,
) -> None:
    manifest = archive.json(MANIFEST, "manifest")
    if manifest.get("format") != BUNDLE_FORMAT or manifest.get("version") != BUNDLE_VERSION:
        raise _BadError(
            f"manifest: not a {BUNDLE_FORMAT} version {BUNDLE_VERSION}"
            f" ({manifest.get('format')!r} version {manifest.get('version')!r})"
        )
    # The hub's key: the first certificate of the chain, which must chain to its CA.
    try:
        chain = x509.load_pem_x509_certificates(archive.read(CHAIN, "certificate chain"))
    except ValueError as exc:
        raise _BadError(f"certificate chain: {CHAIN} holds no PEM certificates") from exc
    problem = verify_chain(chain, trusted_ca)
    if problem:
        raise _BadError(f"certificate chain: {problem}")
    public_key = chain[0].public_key()
    log_id = key_id_of(chain[0])
    report.log_id = log_id
    if manifest.get("logId") != log_id:
        raise _BadError(
            f"manifest: logId {manifest.get('logId')!r} is not the chain's key ({log_id})"
        )

    # Checkpoints: each signed; consecutive ones consistent.
    sizes = manifest.get("checkpoints")
    if not isinstance(sizes, list) or not sizes:
        raise _BadError("manifest: no checkpoints")
    sizes = [_int(s, "manifest: checkpoint size") for s in sizes]
    if sizes != sorted(set(sizes)):
        raise _BadError("manifest: checkpoint sizes are not strictly ascending")
    checkpoints = [_checkpoint_of(archive, s, log_id, public_key) for s in sizes]
    for checkpoint in checkpoints:
        name = f"checkpoints/{checkpoint.size}.tst"
        if name in archive.names:
            token = archive.read(name, f"checkpoint {checkpoint.size} timestamp")
            if check_timestamp is not None:
                statement = evidence.checkpoint_statement(
                    checkpoint.size, checkpoint.root.hex(), checkpoint.time, log_id
                )
                why = check_timestamp(statement, token)
                if why:
                    raise _BadError(f"checkpoint {checkpoint.size}: timestamp token: {why}")
        elif checkpoint.size in (manifest.get("timestamps") or []):
            raise _BadError(f"checkpoint {checkpoint.size}: {name} is missing from the bundle")
    for older, newer in itertools.pairwise(checkpoints):
        if older.size == 0:
            if older.root != hashlib.sha256(b"").digest():
                raise _BadError("checkpoint 0: the root of an empty tree is SHA-256 of nothing")
            continue
        what = f"checkpoint {newer.size}"
        data = archive.json(
            f"proofs/consistency/{older.size}-{newer.size}.json",
            f"{what}: consistency with checkpoint {older.size}",
        )
        if (data.get("fromSize"), data.get("toSize")) != (older.size, newer.size):
            raise _BadError(f"{what}: consistency proof file names other sizes")
        proof = [_hex32(h, f"{what}: consistency path") for h in data.get("path") or []]
        if not verify_consistency(older.size, newer.size, older.root, newer.root, proof):
            raise _BadError(
                f"{what}: not consistent with checkpoint {older.size} (the log was rewritten,"
                " or the proof altered)"
            )
    report.checkpoints = len(checkpoints)
    latest = checkpoints[-1]
    report.root = latest.root.hex()
    if manifest.get("treeSize") != latest.size:
        raise _BadError(f"manifest: treeSize is not the latest checkpoint's ({latest.size})")

    # Records: exact canonical bytes, hashed, signed, included in the latest checkpoint.
    span = manifest.get("range")
    if not isinstance(span, dict):
        raise _BadError("manifest: no range")
    first, last = _int(span.get("first"), "manifest: range"), _int(span.get("last"), "range")
    if not first <= last < latest.size:
        raise _BadError(f"manifest: range {first}..{last} is not inside checkpoint {latest.size}")
    artefacts_named: dict[str, str] = {}
    payloads_named: list[tuple[int, str]] = []
    for index in range(first, last + 1):
        leaf_hash = _verify_record(archive, index, log_id, public_key, latest)
        record = json.loads(archive.read(f"records/{index}.json", f"leaf {index}"))
        for sha, where in artefact_refs(record).items():
            artefacts_named.setdefault(sha, where)
            if f"artefacts/{sha}" not in archive.names:
                raise _BadError(
                    f"leaf {index}: names artefact {sha} ({where}), missing from the bundle"
                )
        payloads_named.extend((index, sha) for sha in payload_refs(record))
        del leaf_hash
        report.leaves += 1

    # Artefacts and payloads: content-addressed, each must hash to its name.
    for sha, where in sorted(artefacts_named.items()):
        content = archive.read(f"artefacts/{sha}", f"artefact {sha} ({where})")
        if hashlib.sha256(content).hexdigest() != sha:
            raise _BadError(f"artefact {sha} ({where}): content does not hash to its name")
        report.artefacts += 1
    included = manifest.get("payloads") or {}
    if not isinstance(included, dict) or not all(isinstance(v, bool) for v in included.values()):
        raise _BadError("manifest: payloads must map each digest to true or false")
    for index, sha in payloads_named:
        name = f"payloads/{sha}"
        if name in archive.read_names:
            continue
        if name not in archive.names:
            if included.get(sha) is True:
                raise _BadError(f"leaf {index}: payload {sha}: {name} is missing from the bundle")
            continue
        if hashlib.sha256(archive.read(name, f"payload {sha}")).hexdigest() != sha:
            raise _BadError(f"leaf {index}: payload {sha}: content does not hash to its name")
        report.payloads += 1
    stray = sorted(n for n in archive.names - archive.read_names if not n.endswith("/"))
    if stray:
        raise _BadError(
            f"file {stray[0]}: not named by any record, checkpoint or proof of the bundle"
        )


def _verify_record(
    archive: _Archive, index: int, log_id: str, public_key: Any, latest: _Checkpoint
) -> bytes:
    what = f"leaf {index}"
    record = archive.read(f"records/{index}.json", what)
    receipt = archive.json(f"receipts/{index}.json", what)
    if receipt.get("leafIndex") != index:
        raise _BadError(
            f"{what}: receipts/{index}.json is the receipt of leaf {receipt.get('leafIndex')}"
        )
    if receipt.get("logId") != log_id:
        raise _BadError(f"{what}: signed by another key ({receipt.get('logId')!r})")
    stated = _hex32(receipt.get("leafHash"), f"{what}: leafHash")
    leaf_hash = evidence.leaf_hash(record)
    if leaf_hash != stated:
        raise _BadError(f"{what} (records/{index}.json): record does not hash to its leaf hash")
    try:
        canonical = evidence.canonical_json(json.loads(record))
    except ValueError as exc:
        raise _BadError(f"{what} (records/{index}.json): not JSON") from exc
    if canonical != record:
        raise _BadError(f"{what} (records/{index}.json): not RFC 8785 canonical JSON")
    time, signature = receipt.get("time"), receipt.get("signature")
    if not isinstance(time, str) or not isinstance(signature, str):
        raise _BadError(f"{what}: receipt without time or signature")
    statement = evidence.receipt_statement(leaf_hash.hex(), index, time, log_id)
    if not evidence.verify_signature(public_key, statement, signature):
        raise _BadError(f"{what}: signature does not verify")
    proof_file = archive.json(f"proofs/inclusion/{index}.json", f"{what}: inclusion proof")
    if (proof_file.get("leafIndex"), proof_file.get("treeSize")) != (index, latest.size):
        raise _BadError(f"{what}: inclusion proof is for another leaf or tree size")
    path = [_hex32(h, f"{what}: audit path") for h in proof_file.get("auditPath") or []]
    if not verify_inclusion(leaf_hash, index, latest.size, path, latest.root):
        raise _BadError(f"{what}: not included in checkpoint {latest.size} (inclusion proof fails)")
    return leaf_hash


def _trusted_checkpoints(
    against: Path, trusted_ca: x509.Certificate | None
) -> tuple[str, list[_Checkpoint]]:
    """The checkpoints of an earlier bundle, each signature checked."""
    earlier = verify_bundle(against, trusted_ca=trusted_ca)
    if not earlier.ok:
        raise _BadError(f"earlier bundle {against.name}: {earlier.problems[0]}")
    archive = _Archive(against)
    with archive.zip:
        manifest = archive.json(MANIFEST, "manifest")
        chain = x509.load_pem_x509_certificates(archive.read(CHAIN, "certificate chain"))
        log_id = key_id_of(chain[0])
        return log_id, [
            _checkpoint_of(archive, s, log_id, chain[0].public_key())
            for s in manifest["checkpoints"]
        ]


def _verify_against(
    archive: _Archive,
    path: Path,
    against: Path,
    report: VerifyReport,
    trusted_ca: x509.Certificate | None,
) -> None:
    log_id, trusted = _trusted_checkpoints(against, trusted_ca)
    if log_id != report.log_id:
        raise _BadError(f"earlier bundle {against.name}: another log ({log_id})")
    manifest = json.loads(archive.zip.read(MANIFEST))
    sizes = set(manifest["checkpoints"])
    chain = x509.load_pem_x509_certificates(archive.zip.read(CHAIN))
    for old in trusted:
        what = f"trusted checkpoint {old.size} (from {against.name})"
        if old.size > manifest["treeSize"]:
            raise _BadError(f"{what}: {path.name} covers only {manifest['treeSize']} leaves")
        if old.size not in sizes:
            raise _BadError(f"{what}: missing from {path.name}")
        new = _checkpoint_of(archive, old.size, log_id, chain[0].public_key())
        if new.root != old.root:
            raise _BadError(f"{what}: {path.name} has another root for this size (a forked log)")
        report.trusted += 1


# -- verification of a store ----------------------------------------------------------------------


def verify_store(
    snapshot: StoreSnapshot,
    certificate: x509.Certificate,
    *,
    trusted: Iterable[dict[str, Any]] = (),
    check_timestamp: TimestampCheck | None = None,
) -> VerifyReport:
    """Check a whole store: every leaf and checkpoint (``verify_log``), consistency between
    consecutive checkpoints, the artefacts and payloads by their digests, and that every artefact
    a record names is kept. ``trusted``: checkpoints the auditor already holds (from an earlier
    bundle); each must still be in the store, and the log must still extend it.
    ``check_timestamp``: how to check a checkpoint's RFC 3161 token, when it has one."""
    report = verify_log(snapshot.leaves, snapshot.checkpoints, certificate)
    report.log_id = key_id_of(certificate)
    if not report.ok:
        return report
    with _first_failure(report, "store"):
        _verify_store(snapshot, report, list(trusted), check_timestamp)
    return report


def _verify_store(
    snapshot: StoreSnapshot,
    report: VerifyReport,
    trusted: list[dict[str, Any]],
    check_timestamp: TimestampCheck | None,
) -> None:
    if check_timestamp is not None:
        for checkpoint in snapshot.checkpoints:
            token = checkpoint.get("timestamp_token")
            if not token:
                continue
            statement = evidence.checkpoint_statement(
                int(checkpoint["tree_size"]),
                checkpoint["root_hash"],
                checkpoint["time"],
                checkpoint["key_id"],
            )
            why = check_timestamp(statement, bytes(token))
            if why:
                size = checkpoint["tree_size"]
                raise _BadError(f"checkpoint {size}: timestamp token: {why}")
    tree = MerkleTree([leaf.leaf_hash for leaf in snapshot.leaves])
    sizes = sorted(int(c["tree_size"]) for c in snapshot.checkpoints)
    roots = {int(c["tree_size"]): bytes.fromhex(c["root_hash"]) for c in snapshot.checkpoints}
    for older, newer in itertools.pairwise(sizes):
        if older and not verify_consistency(
            older, newer, roots[older], roots[newer], tree.consistency_proof(older, newer)
        ):
            raise _BadError(f"checkpoint {newer}: not consistent with checkpoint {older}")
    for old in trusted:
        size = int(old["tree_size"])
        what = f"trusted checkpoint {size}"
        if size > len(snapshot.leaves):
            raise _BadError(f"{what}: the log has only {len(snapshot.leaves)} leaves (truncated)")
        root = bytes.fromhex(old["root_hash"])
        if size and not verify_consistency(
            size,
            len(snapshot.leaves),
            root,
            tree.root(len(snapshot.leaves)),
            tree.consistency_proof(size, len(snapshot.leaves)),
        ):
            raise _BadError(f"{what}: the log does not extend it (history rewritten)")
        if size not in roots:
            raise _BadError(f"{what}: deleted from the store")
        report.trusted += 1
    for leaf in snapshot.leaves:
        record = json.loads(leaf.record)
        for sha, where in artefact_refs(record).items():
            if sha not in snapshot.artefacts:
                raise _BadError(f"leaf {leaf.leaf_index}: names artefact {sha} ({where}), not kept")
    for sha, (where, content) in sorted(snapshot.artefacts.items()):
        if hashlib.sha256(content).hexdigest() != sha:
            raise _BadError(f"artefact {sha} ({where}): content does not hash to its name")
        report.artefacts += 1
    records = [(leaf.leaf_index, json.loads(leaf.record)) for leaf in snapshot.leaves]
    purged = {
        sha
        for _, record in records
        if record.get("event") == "payload.purged"
        for sha in record.get("digests") or []
    }
    for index, record in records:
        for sha in payload_refs(record):
            if sha not in snapshot.kept and sha not in purged:
                raise _BadError(
                    f"leaf {index}: payload {sha} is neither kept nor erased by a sealed purge"
                )
    for sha, why in sorted(snapshot.unreadable.items()):
        raise _BadError(f"payload {sha}: cannot be read ({why})")
    for sha, actual in sorted(snapshot.payloads.items()):
        if actual != sha:
            raise _BadError(f"payload {sha}: content does not hash to its name")
        report.payloads += 1


def trusted_checkpoints(
    bundle: Path, trusted_ca: x509.Certificate | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The checkpoints of an earlier bundle (verified first), as store rows; or why not."""
    try:
        log_id, checkpoints = _trusted_checkpoints(bundle, trusted_ca)
    except _BadError as bad:
        return [], str(bad)
    rows = [
        {
            "tree_size": c.size,
            "root_hash": c.root.hex(),
            "time": c.time,
            "key_id": log_id,
            "signature": c.signature,
        }
        for c in checkpoints
    ]
    return rows, None
