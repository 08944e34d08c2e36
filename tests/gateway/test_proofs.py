"""RFC 9162 inclusion and consistency proofs: generated, verified, and refused when wrong.

Generation is checked against the RFC's recursive definitions written out literally here, and
against the published test vectors of the certificate-transparency reference implementation;
verification against roots computed by ``gateway.evidence.merkle_root``.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import evidence
from gateway.errors import InvalidProofError
from gateway.proofs import (
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)


def _leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [evidence.leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


# -- the RFC's definitions, as written (recursive, slicing): the reference for generation -------
def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def _mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return evidence.node_hash(_mth(d[:k]), _mth(d[k:]))


def _path(m: int, d: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n])."""
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*_path(m, d[:k]), _mth(d[k:])]
    return [*_path(m - k, d[k:]), _mth(d[:k])]


def _subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(d)
    if m == n:
        return [] if b else [_mth(d)]
    k = _k(n)
    if m <= k:
        return [*_subproof(m, d[:k], b), _mth(d[k:])]
    return [*_subproof(m - k, d[k:], False), _mth(d[:k])]


# -- test vectors of the certificate-transparency reference (merkle_tree_test.cc) --------------
_CT_INPUTS = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
_CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
_CT_INCLUSION = [  # (leaf index, tree size, path)
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
_CT_CONSISTENCY = [  # (first, second, path)
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def _ct_tree() -> MerkleTree:
    return MerkleTree(evidence.leaf_hash(leaf) for leaf in _CT_INPUTS)


def test_roots_are_the_reference_vectors() -> None:
    tree = _ct_tree()
    assert [tree.root(size).hex() for size in range(1, 9)] == _CT_ROOTS
    assert tree.root(0) == hashlib.sha256(b"").digest()


@pytest.mark.parametrize(("index", "size", "path"), _CT_INCLUSION)
def test_inclusion_proofs_are_the_reference_vectors(index: int, size: int, path: list[str]) -> None:
    tree = _ct_tree()
    assert [h.hex() for h in tree.inclusion_proof(index, size)] == path
    proof = [bytes.fromhex(h) for h in path]
    verify_inclusion(tree.leaf_hash(index), index, size, proof, bytes.fromhex(_CT_ROOTS[size - 1]))


@pytest.mark.parametrize(("first", "second", "path"), _CT_CONSISTENCY)
def test_consistency_proofs_are_the_reference_vectors(
    first: int, second: int, path: list[str]
) -> None:
    tree = _ct_tree()
    assert [h.hex() for h in tree.consistency_proof(first, second)] == path
    verify_consistency(
        first,
        second,
        bytes.fromhex(_CT_ROOTS[first - 1]),
        bytes.fromhex(_CT_ROOTS[second - 1]),
        [bytes.fromhex(h) for h in path],
    )


def test_every_proof_of_small_trees_is_the_rfc_definition_and_verifies() -> None:
    """Exhaustive up to 40 leaves: every size, every index, every pair of sizes."""
    leaves = _leaves(40)
    tree = MerkleTree(leaves)
    for n in range(1, 41):
        root = evidence.merkle_root(leaves[:n])
        assert tree.root(n) == root == _mth(leaves[:n])
        for i in range(n):
            path = tree.inclusion_proof(i, n)
            assert path == _path(i, leaves[:n])
            verify_inclusion(leaves[i], i, n, path, root)
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == (_subproof(m, leaves[:n], True) if m < n else [])
            verify_consistency(m, n, tree.root(m), root, proof)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.data())
def test_random_trees_prove_inclusion_and_consistency(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n, salt=b"r")
    tree = MerkleTree(leaves)
    size = data.draw(st.integers(1, n), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    first = data.draw(st.integers(1, size), label="first")
    root = evidence.merkle_root(leaves[:size])
    assert tree.root(size) == root
    verify_inclusion(leaves[index], index, size, tree.inclusion_proof(index, size), root)
    verify_consistency(
        first, size, evidence.merkle_root(leaves[:first]), root, tree.consistency_proof(first, size)
    )
    # The one-shot helpers give the same proofs.
    assert inclusion_proof(leaves[:size], index) == tree.inclusion_proof(index, size)
    assert consistency_proof(leaves[:size], first) == tree.consistency_proof(first, size)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=200))
def test_a_tree_grown_leaf_by_leaf_has_every_root_of_merkle_root(records: list[bytes]) -> None:
    leaves = [evidence.leaf_hash(r) for r in records]
    tree = MerkleTree()
    for count, leaf in enumerate(leaves, start=1):
        tree.append(leaf)
        assert tree.root() == evidence.merkle_root(leaves[:count])
    for size in range(len(leaves) + 1):
        assert tree.root(size) == evidence.merkle_root(leaves[:size])


def _flip(value: bytes, bit: int) -> bytes:
    changed = bytearray(value)
    changed[bit // 8 % len(value)] ^= 1 << (bit % 8)
    return bytes(changed)


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 600), st.data())
def test_a_tampered_inclusion_proof_fails(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n, salt=b"t")
    tree = MerkleTree(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    root = tree.root()
    path = tree.inclusion_proof(index)
    # Any changed bit of any node of the path.
    at = data.draw(st.integers(0, len(path) - 1), label="at")
    bit = data.draw(st.integers(0, 255), label="bit")
    tampered = [*path[:at], _flip(path[at], bit), *path[at + 1 :]]
    with pytest.raises(InvalidProofError):
        verify_inclusion(leaves[index], index, n, tampered, root)
    # A node dropped, a node added, the order changed.
    with pytest.raises(InvalidProofError):
        verify_inclusion(leaves[index], index, n, path[:-1], root)
    with pytest.raises(InvalidProofError):
        verify_inclusion(leaves[index], index, n, [*path, path[0]], root)
    if len(path) > 1 and path[0] != path[-1]:
        with pytest.raises(InvalidProofError):
            verify_inclusion(leaves[index], index, n, path[::-1], root)
    # Another leaf, another root, another size.
    other = data.draw(st.integers(0, n - 1).filter(lambda i: i != index), label="other")
    with pytest.raises(InvalidProofError):
        verify_inclusion(leaves[other], index, n, path, root)
    with pytest.raises(InvalidProofError):
        verify_inclusion(leaves[index], index, n, path, tree.root(n - 1))
    if index < n - 1:  # the path of tree n is no path in tree n - 1, even with its true root
        with pytest.raises(InvalidProofError):
            verify_inclusion(leaves[index], index, n - 1, path, tree.root(n - 1))


def test_a_wrong_index_never_verifies() -> None:
    """The path of leaf i proves nothing for any other index, in any tree up to 64 leaves."""
    leaves = _leaves(64, salt=b"w")
    for n in range(1, 65):
        tree = MerkleTree(leaves[:n])
        root = tree.root()
        for i in range(n):
            path = tree.inclusion_proof(i)
            for j in range(n + 2):
                if j != i:
                    with pytest.raises(InvalidProofError):
                        verify_inclusion(leaves[i], j, n, path, root)


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 600), st.data())
def test_a_tampered_consistency_proof_fails(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n, salt=b"c")
    tree = MerkleTree(leaves)
    first = data.draw(st.integers(1, n - 1), label="first")
    old, new = tree.root(first), tree.root(n)
    path = tree.consistency_proof(first, n)
    at = data.draw(st.integers(0, len(path) - 1), label="at")
    bit = data.draw(st.integers(0, 255), label="bit")
    tampered = [*path[:at], _flip(path[at], bit), *path[at + 1 :]]
    with pytest.raises(InvalidProofError):
        verify_consistency(first, n, old, new, tampered)
    with pytest.raises(InvalidProofError):
        verify_consistency(first, n, old, new, path[:-1])
    with pytest.raises(InvalidProofError):
        verify_consistency(first, n, old, new, [*path, path[0]])
    with pytest.raises(InvalidProofError):
        verify_consistency(first, n, _flip(old, bit), new, path)
    with pytest.raises(InvalidProofError):
        verify_consistency(first, n, old, _flip(new, bit), path)
    # The proof of one pair of sizes is no proof for another.
    if n > 2:
        other = data.draw(st.integers(1, n - 1).filter(lambda m: m != first), label="other")
        with pytest.raises(InvalidProofError):
            verify_consistency(other, n, tree.root(other), new, path)


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 500), st.data())
def test_a_rewritten_tree_is_caught(n: int, data: st.DataObject) -> None:
    """A log that rewrote one leaf of an old checkpoint's tree cannot prove itself consistent
    with that checkpoint, nor prove the old leaf included."""
    leaves = _leaves(n, salt=b"o")
    first = data.draw(st.integers(1, n - 1), label="first")
    changed = data.draw(st.integers(0, first - 1), label="changed")
    old_root = evidence.merkle_root(leaves[:first])
    rewritten = [*leaves[:changed], evidence.leaf_hash(b"forged"), *leaves[changed + 1 :]]
    forged = MerkleTree(rewritten)
    assert forged.root(first) != old_root
    with pytest.raises(InvalidProofError):
        verify_consistency(first, n, old_root, forged.root(), forged.consistency_proof(first))
    with pytest.raises(InvalidProofError):
        verify_inclusion(
            leaves[changed], changed, n, forged.inclusion_proof(changed), forged.root()
        )
    # The honest tree still proves both.
    honest = MerkleTree(leaves)
    verify_consistency(first, n, old_root, honest.root(), honest.consistency_proof(first))


def test_edge_cases_outside_the_rfc_algorithms() -> None:
    leaves = _leaves(5)
    tree = MerkleTree(leaves)
    root = tree.root()
    verify_consistency(5, 5, root, root, [])  # equal sizes: empty proof, equal roots
    with pytest.raises(InvalidProofError):
        verify_consistency(5, 5, root, tree.root(4), [])
    with pytest.raises(InvalidProofError):
        verify_consistency(5, 5, root, root, [root])
    with pytest.raises(InvalidProofError):
        verify_consistency(0, 5, hashlib.sha256(b"").digest(), root, [])
    with pytest.raises(InvalidProofError):
        verify_consistency(5, 4, root, tree.root(4), tree.consistency_proof(4, 5))
    with pytest.raises(InvalidProofError):  # the RFC's step 1: first < second, empty path
        verify_consistency(4, 5, tree.root(4), root, [])
    with pytest.raises(InvalidProofError):
        verify_inclusion(leaves[0], 5, 5, tree.inclusion_proof(0), root)
    with pytest.raises(InvalidProofError):
        verify_inclusion(leaves[0], -1, 5, tree.inclusion_proof(0), root)
    with pytest.raises(InvalidProofError):  # not a SHA-256 value
        verify_inclusion(leaves[0][:31], 0, 5, tree.inclusion_proof(0), root)
    with pytest.raises(InvalidProofError):
        root_from_inclusion_proof(leaves[0], 0, 5, [b"short"])
    # Generation refuses what has no proof.
    with pytest.raises(ValueError, match="beyond the tree"):
        tree.inclusion_proof(0, 6)
    with pytest.raises(ValueError, match="below the tree size"):
        tree.inclusion_proof(5, 5)
    with pytest.raises(ValueError, match="must be in"):
        tree.consistency_proof(0, 5)
    with pytest.raises(ValueError, match="must be in"):
        tree.consistency_proof(5, 4)
    with pytest.raises(ValueError, match="32 bytes"):
        tree.append(b"x")
    assert tree.index_of(leaves[3]) == 3
    assert tree.index_of(leaves[3], 3) is None


def test_a_large_tree_is_built_once_and_proves_any_size() -> None:
    """100 000 leaves: proofs for many sizes from one tree, each checked."""
    leaves = _leaves(100_000, salt=b"L")
    tree = MerkleTree(leaves)
    assert tree.root() == evidence.merkle_root(leaves)
    for size in (1, 2, 65_536, 65_537, 99_999, 100_000):
        root = tree.root(size)
        for index in {0, size // 3, size - 1}:
            verify_inclusion(leaves[index], index, size, tree.inclusion_proof(index, size), root)
        for first in {1, size // 2 or 1, size - 1 or 1, size}:
            verify_consistency(
                first, size, tree.root(first), root, tree.consistency_proof(first, size)
            )
