"""The evidence log for auditors: signed checkpoints, records, inclusion and consistency proofs.

Only the auditor role (a certificate naming ``urn:be:guichet:role:auditor``) is served: the log
names every party's exchanges. Parties and operators get 403 ``authz.role-required``; a caller
without a certificate never gets past the TLS handshake (or gets 401).

::

    GET /v1/log/checkpoint[?size=n]                  the latest signed checkpoint (or of size n)
    GET /v1/log/proof/inclusion?index=i[&size=n]     inclusion path of leaf i in the tree of size n
    GET /v1/log/proof/inclusion?hash=h[&size=n]      … of the first leaf whose hash is h
    GET /v1/log/proof/consistency?first=m[&second=n] consistency path from size m to size n
    GET /v1/log/records/{index}                      the leaf: record bytes, hash, signature

``size`` and ``second`` default to the latest checkpoint's tree size, so that a proof fetched
without them verifies against the root that checkpoint signs. Any size up to the log's may be
asked for; a proof is worth what the signed root it is checked against is worth. Proofs are
computed by :mod:`gateway.proofs` over a tree kept in memory and extended as the log grows, so a
proof costs O(log² n) hashes once the leaf hashes are read. Hashes are lowercase hex, the leaf
bytes base64. A bad parameter is a problem naming it (``parameter``): ``log.invalid-parameter``
(400) when it is malformed or missing, ``log.out-of-range`` (422) when it lies outside the log.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Path, Query

from gateway.errors import GatewayError, LogQueryError, NotFoundError
from gateway.hub import Hub
from gateway.proofs import MerkleTree
from gateway.service import openapi as docs
from gateway.store import Store
from gateway.timestamps import tsa_label

__all__ = ["LogTree", "router"]


_INTEGER = re.compile(r"[0-9]{1,18}")  # below 2**63 whatever the digits
_HASH = re.compile(r"[0-9a-fA-F]{64}")
# What the description says of them (documentation only: the handlers check them, and refuse
# anything else with a problem naming the parameter).
_AN_INTEGER: dict[str, Any] = {"pattern": f"^{_INTEGER.pattern}$"}
_A_HASH: dict[str, Any] = {"pattern": f"^{_HASH.pattern}$"}


class LogTree:
    """The Merkle tree of the store's log, read once and extended as the log grows."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._tree = MerkleTree()
        self._lock = threading.Lock()

    def use(self, size: int, work: Callable[[MerkleTree], Any]) -> Any:
        """Run ``work`` on a tree of at least ``size`` leaves (size <= the log's leaf count)."""
        with self._lock:
            have = self._tree.size
            if have < size:
                hashes = self._store.leaf_hashes(have, size)
                if len(hashes) != size - have:
                    raise GatewayError(
                        f"the evidence log is not contiguous between leaves {have} and {size}"
                    )
                self._tree.extend(hashes)
            return work(self._tree)


def _integer(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not _INTEGER.fullmatch(value):
        raise LogQueryError(
            f"{name} must be a non-negative decimal integer, not {value[:40]!r}", parameter=name
        )
    return int(value)


def _required(name: str, value: int | None) -> int:
    if value is None:
        raise LogQueryError(f"the query parameter {name} is required", parameter=name)
    return value


def _out_of_range(name: str, detail: str) -> LogQueryError:
    return LogQueryError(detail, parameter=name, code="log.out-of-range")


def _checkpoint_json(row: dict[str, Any]) -> dict[str, Any]:
    """A signed checkpoint; with its RFC 3161 TimeStampToken (DER, base64) once one was given."""
    body = {
        "treeSize": row["tree_size"],
        "rootHash": row["root_hash"],
        "time": row["time"],
        "keyId": row["key_id"],
        "signature": row["signature"],
    }
    if row.get("token") is not None:
        body["timestampToken"] = base64.b64encode(bytes(row["token"])).decode()
        body["timestampAuthority"] = tsa_label(row["tsa_url"] or "")
    return body


def router(hub: Hub) -> APIRouter:
    """The ``/v1/log`` routes over ``hub``'s store (for the auditor role: gateway.authz)."""
    store = hub.store
    tree = LogTree(store)
    api = APIRouter(prefix="/v1/log", tags=["evidence log"])

    def latest_size(parameter: str) -> int:
        latest = store.latest_checkpoint()
        if latest is None:
            raise NotFoundError(
                f"no signed checkpoint yet: give {parameter} explicitly, or ask again once the"
                " hub has signed one",
                code="log.no-checkpoint",
            )
        return int(latest["tree_size"])

    def tree_size(name: str, value: int, *, minimum: int = 1) -> int:
        count = store.leaf_count()
        if not minimum <= value <= count:
            raise _out_of_range(name, f"{name} must be in {minimum}..{count}, not {value}")
        return value

    @api.get(
        "/checkpoint",
        responses=docs.responses({200: ("A signed checkpoint", docs.Checkpoint)}, *docs.LOG),
    )
    def checkpoint(
        size: str | None = Query(
            None, description="a tree size; default: the latest", json_schema_extra=_AN_INTEGER
        ),
    ) -> dict[str, Any]:
        """The latest signed checkpoint (tree size, root hash, time, key id, signature), or the
        one of tree size ``size``."""
        wanted = _integer("size", size)
        row = store.latest_checkpoint() if wanted is None else store.checkpoint(wanted)
        if row is None:
            which = "yet" if wanted is None else f"of tree size {wanted}"
            raise NotFoundError(f"no signed checkpoint {which}", code="log.no-checkpoint")
        return _checkpoint_json(row)

    @api.get(
        "/proof/inclusion",
        responses=docs.responses(
            {200: ("The inclusion path", docs.InclusionProof)},
            *docs.LOG,
            "log.out-of-range",
            "log.leaf-not-found",
        ),
    )
    def inclusion(
        index: str | None = Query(
            None, description="the leaf index", json_schema_extra=_AN_INTEGER
        ),
        hash: str | None = Query(  # noqa: A002
            None, description="or the leaf hash (hex)", json_schema_extra=_A_HASH
        ),
        size: str | None = Query(
            None,
            description="tree size; default: latest checkpoint's",
            json_schema_extra=_AN_INTEGER,
        ),
    ) -> dict[str, Any]:
        """The RFC 9162 inclusion path of one leaf (by index or by leaf hash) in the tree of
        ``size`` leaves."""
        leaf_index = _integer("index", index)
        if leaf_index is None and hash is None:
            raise LogQueryError("give the leaf's index or its hash", parameter="index")
        if leaf_index is not None and hash is not None:
            raise LogQueryError("give the leaf's index or its hash, not both", parameter="hash")
        if hash is not None and not _HASH.fullmatch(hash):
            raise LogQueryError("hash must be 64 hexadecimal digits", parameter="hash")
        given = _integer("size", size)
        n = tree_size("size", given) if given is not None else latest_size("size")
        if leaf_index is not None and leaf_index >= n:
            raise _out_of_range("index", f"index must be below the tree size {n}")

        def prove(merkle: MerkleTree) -> dict[str, Any]:
            i = leaf_index
            if i is None:
                i = merkle.index_of(bytes.fromhex(hash or ""), n)
                if i is None:
                    raise NotFoundError(
                        f"no leaf of hash {hash} in the tree of size {n}",
                        code="log.leaf-not-found",
                    )
            return {
                "leafIndex": i,
                "treeSize": n,
                "leafHash": merkle.leaf_hash(i).hex(),
                "inclusionPath": [h.hex() for h in merkle.inclusion_proof(i, n)],
            }

        result: dict[str, Any] = tree.use(n, prove)
        return result

    @api.get(
        "/proof/consistency",
        responses=docs.responses(
            {200: ("The consistency path", docs.ConsistencyProof)}, *docs.LOG, "log.out-of-range"
        ),
    )
    def consistency(
        first: str | None = Query(
            None, description="the earlier tree size", json_schema_extra=_AN_INTEGER
        ),
        second: str | None = Query(
            None,
            description="the later one; default: latest checkpoint's",
            json_schema_extra=_AN_INTEGER,
        ),
    ) -> dict[str, Any]:
        """The RFC 9162 consistency path from the tree of ``first`` leaves to the tree of
        ``second`` leaves (empty when they are equal)."""
        m = _required("first", _integer("first", first))
        given = _integer("second", second)
        n = tree_size("second", given) if given is not None else latest_size("second")
        if not 1 <= m <= n:
            raise _out_of_range("first", f"first must be in 1..{n} (second), not {m}")
        path: list[bytes] = tree.use(n, lambda merkle: merkle.consistency_proof(m, n))
        return {"first": m, "second": n, "consistencyPath": [h.hex() for h in path]}

    @api.get(
        "/records/{index}",
        responses=docs.responses(
            {200: ("One leaf of the log", docs.LogRecord)},
            "log.invalid-parameter",
            "log.leaf-not-found",
            "store.unavailable",
        ),
    )
    def record(index: str = Path(json_schema_extra=_AN_INTEGER)) -> dict[str, Any]:
        """One leaf: its bytes (``leaf``, base64: the RFC 8785 record that is hashed), the record
        they hold, its leaf hash, and the hub's signature over hash, index, time and key id."""
        leaf_index = _required("index", _integer("index", index))
        row = store.leaf(leaf_index)
        if row is None:
            raise NotFoundError(f"no leaf {leaf_index} in the log", code="log.leaf-not-found")
        try:
            parsed: Any = json.loads(row.record)
        except ValueError:
            parsed = None  # the bytes are what is hashed; a reader gets them either way
        return {
            "leafIndex": row.leaf_index,
            "leafHash": row.leaf_hash.hex(),
            "leaf": base64.b64encode(row.record).decode(),
            "record": parsed,
            "time": row.signed_at,
            "keyId": row.key_id,
            "signature": row.signature,
        }

    return api
