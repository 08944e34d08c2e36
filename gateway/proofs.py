"""Inclusion and consistency proofs of the evidence log, per RFC 9162 §2.1.3 and §2.1.4.

Generation works on a :class:`MerkleTree` built once from the log's leaf hashes: it keeps the
hash of every complete, aligned subtree (2n hashes for n leaves), so any node of the RFC's tree
over the first ``size`` leaves costs O(log n) and a proof O(log² n), whatever ``size``. The tree
only grows (``extend``), like the log.

Verification (:func:`verify_inclusion`, :func:`verify_consistency`) follows the algorithms of
RFC 9162 §2.1.3.2 and §2.1.4.2 step by step, with nothing of the hub in them: any RFC 6962/9162
log's proofs check with them. Each raises :class:`InvalidProofError` saying why, or returns None.
The edge cases the RFC leaves outside its algorithms are decided here, and said where they are.

Hashes are raw 32-byte SHA-256 values; the service carries them as lowercase hex.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from gateway.errors import InvalidProofError

__all__ = [
    "InvalidProofError",
    "MerkleTree",
    "consistency_proof",
    "inclusion_proof",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
_EMPTY_ROOT = hashlib.sha256(b"").digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): where RFC 9162 splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only RFC 9162 Merkle tree over leaf hashes.

    ``levels[h][i]`` is the hash of the complete subtree of the 2**h leaves starting at i * 2**h;
    only complete subtrees are kept, so every entry stays true as leaves are appended.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        self.extend(leaf_hashes)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, leaf_hash: bytes) -> None:
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes, not {len(leaf_hash)}")
        levels = self._levels
        levels[0].append(leaf_hash)
        height = 0
        # A level of even length just completed a pair: its parent is now complete too.
        while len(levels[height]) % 2 == 0:
            parent = _node(levels[height][-2], levels[height][-1])
            if height + 1 == len(levels):
                levels.append([])
            levels[height + 1].append(parent)
            height += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for leaf_hash in leaf_hashes:
            self.append(leaf_hash)

    def leaf_hash(self, index: int) -> bytes:
        return self._levels[0][index]

    def index_of(self, leaf_hash: bytes, size: int | None = None) -> int | None:
        """The first index at which ``leaf_hash`` is a leaf among the first ``size`` leaves."""
        end = self.size if size is None else size
        try:
            return self._levels[0].index(leaf_hash, 0, end)
        except ValueError:
            return None

    def root(self, size: int | None = None) -> bytes:
        """MTH(D[size]): the root of the tree of the first ``size`` leaves (default: all)."""
        size = self.size if size is None else size
        self._check_size(size, "size")
        return _EMPTY_ROOT if size == 0 else self.subtree_hash(0, size)

    def subtree_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]), for ``start < end <= size``: a stored complete subtree when the
        range is one, else split at the largest power of two as RFC 9162 §2.1.1 does."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            return self._levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return _node(self.subtree_hash(start, start + k), self.subtree_hash(start + k, end))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]) of RFC 9162 §2.1.3.1: the inclusion path, leaf to root."""
        size = self.size if size is None else size
        self._check_size(size, "size")
        if not 0 <= index < size:
            raise ValueError(f"index {index} is not below the tree size {size}")
        path: list[bytes] = []
        start, end, m = 0, size, index
        while end - start > 1:
            k = _split(end - start)
            if m < k:
                path.append(self.subtree_hash(start + k, end))
                end = start + k
            else:
                path.append(self.subtree_hash(start, start + k))
                start, m = start + k, m - k
        path.reverse()  # gathered root-first; the RFC's path runs from the leaf up
        return path

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        """PROOF(first, D[second]) of RFC 9162 §2.1.4.1, for 0 < first <= second (empty when
        the two are equal)."""
        second = self.size if second is None else second
        self._check_size(second, "second")
        if not 0 < first <= second:
            raise ValueError(f"first ({first}) must be in 1..second ({second})")
        path: list[bytes] = []
        start, end, m, complete = 0, second, first, True
        # SUBPROOF(m, D[start:end], complete), unrolled; hashes gathered root-first.
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                path.append(self.subtree_hash(start + k, end))
                end = start + k
            else:
                path.append(self.subtree_hash(start, start + k))
                start, m, complete = start + k, m - k, False
        if not complete:
            path.append(self.subtree_hash(start, end))
        path.reverse()
        return path

    def _check_size(self, size: int, name: str) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"{name} {size} is beyond the tree, which has {self.size} leaves")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The inclusion path of leaf ``index`` in the tree of exactly ``leaf_hashes``."""
    return MerkleTree(leaf_hashes).inclusion_proof(index)


def consistency_proof(leaf_hashes: Sequence[bytes], first: int) -> list[bytes]:
    """The consistency path from the tree of the first ``first`` leaves to all of them."""
    return MerkleTree(leaf_hashes).consistency_proof(first)


def _check_hashes(**values: bytes | Sequence[bytes]) -> None:
    for name, value in values.items():
        for item in [value] if isinstance(value, bytes) else value:
            if not isinstance(item, bytes) or len(item) != HASH_SIZE:
                raise InvalidProofError(f"{name}: every hash has {HASH_SIZE} bytes")


def root_from_inclusion_proof(
    leaf_hash: bytes, leaf_index: int, tree_size: int, inclusion_path: Sequence[bytes]
) -> bytes:
    """Steps 1 to 4 and the size check of step 5 of RFC 9162 §2.1.3.2: the root the path leads
    to. :func:`verify_inclusion` compares it with a trusted root."""
    _check_hashes(leaf_hash=leaf_hash, inclusion_path=inclusion_path)
    # 1. leaf_index must be below tree_size.
    if not 0 <= leaf_index < tree_size:
        raise InvalidProofError(f"leaf index {leaf_index} is not below the tree size {tree_size}")
    # 2. fn = leaf_index, sn = tree_size - 1;  3. r = hash.
    fn, sn = leaf_index, tree_size - 1
    r = leaf_hash
    # 4. for each p in the inclusion path:
    for p in inclusion_path:
        if sn == 0:  # a.
            raise InvalidProofError("the inclusion path is longer than the tree is high")
        if fn & 1 or fn == sn:  # b.
            r = _node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1  # c.
        sn >>= 1
    # 5. (first half) sn must be 0: the path reached the root.
    if sn != 0:
        raise InvalidProofError("the inclusion path is shorter than the tree is high")
    return r


def verify_inclusion(
    leaf_hash: bytes,
    leaf_index: int,
    tree_size: int,
    inclusion_path: Sequence[bytes],
    root_hash: bytes,
) -> None:
    """RFC 9162 §2.1.3.2: that the leaf of hash ``leaf_hash`` is leaf ``leaf_index`` of the tree
    of ``tree_size`` leaves whose root is ``root_hash``. Raises :class:`InvalidProofError`."""
    _check_hashes(root_hash=root_hash)
    if root_from_inclusion_proof(leaf_hash, leaf_index, tree_size, inclusion_path) != root_hash:
        raise InvalidProofError(
            f"the inclusion path of leaf {leaf_index} does not lead to the root of tree size"
            f" {tree_size}"
        )


def verify_consistency(
    first: int,
    second: int,
    first_hash: bytes,
    second_hash: bytes,
    consistency_path: Sequence[bytes],
) -> None:
    """RFC 9162 §2.1.4.2: that the tree of ``second`` leaves (root ``second_hash``) extends the
    tree of ``first`` leaves (root ``first_hash``) by appending only. Raises
    :class:`InvalidProofError`.

    Outside the RFC's algorithm (defined for 0 < first < second): equal sizes are consistent
    when the path is empty and the roots are equal; a size of 0, or first > second, never is.
    """
    _check_hashes(first_hash=first_hash, second_hash=second_hash, consistency_path=consistency_path)
    if not 0 < first <= second:
        raise InvalidProofError(f"no consistency proof from tree size {first} to {second}")
    if first == second:
        if consistency_path:
            raise InvalidProofError("a proof between equal tree sizes is empty")
        if first_hash != second_hash:
            raise InvalidProofError(f"two different roots for the same tree size {first}")
        return
    path = list(consistency_path)
    # 1. An empty path fails.
    if not path:
        raise InvalidProofError("the consistency path is empty")
    # 2. When first is an exact power of 2, first_hash is the path's implicit first node.
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    # 3. fn = first - 1, sn = second - 1;  4. shift both while fn's lowest bit is set.
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = the first value of the path.
    fr = sr = path[0]
    # 6. for each subsequent value c:
    for c in path[1:]:
        if sn == 0:  # a.
            raise InvalidProofError("the consistency path is longer than the tree is high")
        if fn & 1 or fn == sn:  # b.
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1  # c.
        sn >>= 1
    # 7. fr must be first_hash, sr second_hash, and sn 0.
    if sn != 0:
        raise InvalidProofError("the consistency path is shorter than the tree is high")
    if fr != first_hash:
        raise InvalidProofError(
            f"the consistency path does not lead to the root of tree size {first}"
        )
    if sr != second_hash:
        raise InvalidProofError(
            f"the consistency path does not lead to the root of tree size {second}"
        )
