"""Merkle arithmetic against the RFC 6962 definition, and signatures checked by openssl."""

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import evidence
from gateway.certs import init_dev_pki
from gateway.evidence import HubSigner


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, written as the RFC states it (recursive split)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return evidence.node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


@given(st.lists(st.binary(min_size=0, max_size=16), max_size=70))
def test_merkle_root_is_rfc6962(records: list[bytes]) -> None:
    hashes = [evidence.leaf_hash(r) for r in records]
    assert evidence.merkle_root(hashes) == _mth(hashes)


def test_leaf_hash_domain_separation() -> None:
    assert evidence.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert evidence.node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


def test_canonical_json_is_rfc8785() -> None:
    assert (
        evidence.canonical_json({"b": 1, "a": [True, None, "é"]})
        == '{"a":[true,null,"é"],"b":1}'.encode()
    )


def test_receipt_signature_verifies_with_openssl(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "pki", [])
    signer = HubSigner.from_files(pki.signing_key, pki.signing_cert)
    statement = evidence.receipt_statement("ab" * 32, 7, "2026-11-27T10:00:00Z", signer.key_id)
    signature = signer.sign(statement)
    assert signer.verify(statement, signature)
    assert not signer.verify(statement.replace(b"7", b"8"), signature)
    (tmp_path / "statement").write_bytes(statement)
    (tmp_path / "sig").write_bytes(base64.b64decode(signature))
    subprocess.run(
        [
            "openssl",
            "x509",
            "-in",
            str(pki.signing_cert),
            "-pubkey",
            "-noout",
            "-out",
            str(tmp_path / "pub.pem"),
        ],
        check=True,
    )
    verified = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            str(tmp_path / "pub.pem"),
            "-signature",
            str(tmp_path / "sig"),
            str(tmp_path / "statement"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verified OK" in verified.stdout


def test_person_ref_is_keyed() -> None:
    assert evidence.person_ref(b"k1", "85073003328") != evidence.person_ref(b"k2", "85073003328")
    assert "85073003328" not in evidence.person_ref(b"k1", "85073003328")


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(_json_values)
def test_canonical_json_matches_the_reference_implementation(value: object) -> None:
    import rfc8785

    assert evidence.canonical_json(value) == bytes(rfc8785.dumps(value))


def test_times_are_read_one_way_a_zoneless_one_as_utc() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from gateway.evidence import parse_moment

    assert parse_moment("2026-11-27T10:00:00Z") == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert parse_moment("2026-11-27T10:00:00") == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert parse_moment("2026-11-27T11:00:00+01:00") == datetime(
        2026, 11, 27, 11, tzinfo=timezone(timedelta(hours=1))
    )
    assert parse_moment("2026-11-27") == datetime(2026, 11, 27, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_moment("yesterday")
