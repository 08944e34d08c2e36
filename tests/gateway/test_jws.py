"""Detached JWS over the body bytes (gateway.jws): round trips, cross-checks with an independent
implementation (jwcrypto) and the openssl command line, and hostile headers, each refused with
its exact code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from gateway.certs import DevPki, PartyIdentity, init_dev_pki
from gateway.errors import PROBLEMS, SignatureError
from gateway.jws import HEADER, MAX_HEADER_VALUE, sign_detached, verify_detached
from gateway.signing import ReplayCache, SigningKey

PARTIES = (
    PartyIdentity("be-platform", "Plateforme belge", "0123456749"),
    PartyIdentity("fr-region", "Region Flandre", "0987654321"),
)
NOW = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
BODY = b'{"header": {"messageId": "6a1f"}, "amount": 12.50, "name": "Zo\xc3\xab"}\n'

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")


@dataclass(frozen=True)
class Keys:
    pki: DevPki
    ec: SigningKey  # be-platform, EC P-256 from the dev PKI
    other: SigningKey  # fr-region
    rsa: SigningKey  # RSA-2048, issued by the dev CA here


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    pki = init_dev_pki(tmp_path_factory.mktemp("pki"), PARTIES, now=NOW - timedelta(days=1))
    party = pki.party("be-platform")
    other = pki.party("fr-region")
    return Keys(
        pki=pki,
        ec=SigningKey.from_files(party.cert, party.key),
        other=SigningKey.from_files(other.cert, other.key),
        rsa=_rsa_signer(pki, bits=2048),
    )


def _rsa_signer(pki: DevPki, *, bits: int) -> SigningKey:
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "rsa-office")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("urn:be:guichet:party:rsa-office")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return SigningKey(key, (cert,))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def x5c(signer: SigningKey) -> list[str]:
    return [
        base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in signer.chain
    ]


def good_header(signer: SigningKey, alg: str = "ES256", **changes: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "alg": alg,
        "b64": False,
        "crit": ["b64"],
        "x5c": x5c(signer),
        "iat": int(NOW.timestamp()),
        "jti": "test-jti",
    }
    header.update(changes)
    return {k: v for k, v in header.items() if v is not None}


def raw_sign(alg: str, key: Any, data: bytes) -> bytes:
    """A JWS signature computed with cryptography alone (a third implementation, for forging)."""
    if alg == "ES256":
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg == "RS256":
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[no-any-return]
    if alg == "PS256":
        return key.sign(  # type: ignore[no-any-return]
            data, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
        )
    raise AssertionError(alg)


def forge(
    header: dict[str, Any] | bytes,
    body: bytes,
    signer: SigningKey,
    *,
    alg: str = "ES256",
    payload_part: str = "",
) -> str:
    """A detached JWS over ``body`` with exactly this protected header (dict, or raw JSON bytes
    for what json.dumps cannot write), properly signed by ``signer``."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    protected = b64url(raw)
    signature = raw_sign(alg, signer.key, protected.encode() + b"." + body)
    return f"{protected}.{payload_part}.{b64url(signature)}"


def refused(code: str, value: str, body: bytes = BODY, now: datetime = NOW) -> SignatureError:
    assert code in PROBLEMS
    with pytest.raises(SignatureError) as caught:
        verify_detached(value, body, now=now)
    assert caught.value.code == code, caught.value.detail
    return caught.value


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "asked", "alg"),
    [("ec", None, "ES256"), ("rsa", None, "PS256"), ("rsa", "RS256", "RS256")],
)
def test_round_trip(keys: Keys, which: str, asked: str | None, alg: str) -> None:
    signer: SigningKey = getattr(keys, which)
    value = sign_detached(BODY, signer, now=NOW, algorithm=asked)
    assert HEADER == "X-JWS-Signature"
    protected, payload, signature = value.split(".")
    assert payload == ""
    header = json.loads(unb64url(protected))
    assert header["alg"] == alg
    assert header["b64"] is False
    assert header["crit"] == ["b64"]
    assert header["iat"] == int(NOW.timestamp())
    assert base64.b64decode(header["x5c"][0]) == signer.certificate.public_bytes(
        serialization.Encoding.DER
    )

    verified = verify_detached(value, BODY, now=NOW + timedelta(seconds=30))
    assert verified.format == "jws"
    assert verified.certificate == signer.certificate
    assert verified.chain == ()
    assert verified.signed_at == NOW
    assert verified.expires_at == NOW + timedelta(seconds=300 + 60)  # max age + skew
    if alg != "ES256":  # ECDSA's is of the low-s form (see the test of a flipped s)
        assert verified.fingerprint == hashlib.sha256(unb64url(signature)).hexdigest()
    assert verified.evidence == {
        "format": "jws",
        "value": value,
        "algorithm": alg,
        "signedAt": "2026-03-02T10:00:00Z",
    }


@pytest.mark.parametrize("body", [b"", b"abc", b"a.b.c", b"\x00\xff binary", b"~" * 200_000])
def test_any_body_bytes(keys: Keys, body: bytes) -> None:
    # A body of URL-safe characters only (b"abc") must stay detached too.
    value = sign_detached(body, keys.ec, now=NOW)
    assert value.split(".")[1] == ""
    verify_detached(value, body, now=NOW)


def test_two_signatures_of_one_body_differ(keys: Keys) -> None:
    first, second = (sign_detached(BODY, keys.rsa, now=NOW, algorithm="RS256") for _ in "ab")
    # RS256 is deterministic: only the random jti makes them differ.
    assert first != second
    jtis = {json.loads(unb64url(v.split(".")[0]))["jti"] for v in (first, second)}
    assert len(jtis) == 2


def test_one_byte_changed_does_not_verify(keys: Keys) -> None:
    value = sign_detached(BODY, keys.ec, now=NOW)
    changed = bytearray(BODY)
    changed[10] ^= 0x01
    refused("signature.invalid", value, bytes(changed))
    refused("signature.invalid", value, BODY + b" ")
    refused("signature.invalid", value, BODY[:-1])


def test_the_bytes_are_signed_not_the_json(keys: Keys) -> None:
    document = {"header": {"messageId": "6a1f"}, "amount": 12}
    sent = json.dumps(document).encode()
    value = sign_detached(sent, keys.rsa, now=NOW)
    same_json = json.dumps(document, indent=2).encode()
    assert json.loads(same_json) == json.loads(sent)
    refused("signature.invalid", value, same_json)
    refused("signature.invalid", value, json.dumps(document, separators=(",", ":")).encode())


def test_chain_beyond_the_leaf_is_returned(keys: Keys) -> None:
    ca = x509.load_pem_x509_certificate(keys.pki.ca_cert.read_bytes())
    signer = SigningKey(keys.ec.key, (keys.ec.certificate, ca))
    verified = verify_detached(sign_detached(BODY, signer, now=NOW), BODY, now=NOW)
    assert verified.certificate == keys.ec.certificate
    assert verified.chain == (ca,)


def test_fingerprint_feeds_the_replay_cache(keys: Keys) -> None:
    value = sign_detached(BODY, keys.ec, now=NOW)
    cache = ReplayCache()
    cache.check_and_add(verify_detached(value, BODY, now=NOW), now=NOW.timestamp())
    with pytest.raises(SignatureError) as caught:
        cache.check_and_add(verify_detached(value, BODY, now=NOW), now=NOW.timestamp() + 1)
    assert caught.value.code == "signature.replayed"


def test_replay_cache_remembers_as_long_as_the_signature_is_accepted(keys: Keys) -> None:
    # Accepted up to iat + max age + skew: a replay in the skew's last seconds is still refused.
    value = sign_detached(BODY, keys.ec, now=NOW)
    cache = ReplayCache()
    late = NOW + timedelta(seconds=330)
    cache.check_and_add(verify_detached(value, BODY, now=late), now=late.timestamp())
    later = NOW + timedelta(seconds=355)
    with pytest.raises(SignatureError) as caught:
        cache.check_and_add(verify_detached(value, BODY, now=later), now=later.timestamp())
    assert caught.value.code == "signature.replayed"


def test_ecdsa_s_flipped_is_the_same_fingerprint(keys: Keys) -> None:
    # (r, n - s) verifies as well as (r, s): a replay must not pass the cache by flipping s.
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    value = sign_detached(BODY, keys.ec, now=NOW)
    protected, _, signature = value.split(".")
    raw = unb64url(signature)
    flipped = raw[:32] + (n - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")
    twin = f"{protected}..{b64url(flipped)}"
    assert twin != value
    first = verify_detached(value, BODY, now=NOW)
    second = verify_detached(twin, BODY, now=NOW)
    assert first.fingerprint == second.fingerprint


# --- an independent implementation: jwcrypto ----------------------------------------------------


def _jwcrypto_key(cert: x509.Certificate) -> jwcrypto_jwk.JWK:
    return jwcrypto_jwk.JWK.from_pyca(cert.public_key())


@pytest.mark.parametrize(("which", "alg"), [("ec", None), ("rsa", "PS256"), ("rsa", "RS256")])
@pytest.mark.parametrize("body", [BODY, b"plain-url-safe~body", b""])
def test_jwcrypto_verifies_what_we_sign(
    keys: Keys, which: str, alg: str | None, body: bytes
) -> None:
    signer: SigningKey = getattr(keys, which)
    value = sign_detached(body, signer, now=NOW, algorithm=alg)
    token = jwcrypto_jws.JWS()
    token.deserialize(value)
    token.verify(_jwcrypto_key(signer.certificate), detached_payload=body)
    assert token.is_valid
    with pytest.raises(jwcrypto_jws.InvalidJWSSignature):
        token.verify(_jwcrypto_key(signer.certificate), detached_payload=body + b"x")


@pytest.mark.parametrize(("which", "alg"), [("ec", "ES256"), ("rsa", "PS256"), ("rsa", "RS256")])
def test_we_verify_what_jwcrypto_signs(keys: Keys, which: str, alg: str) -> None:
    signer: SigningKey = getattr(keys, which)
    key = jwcrypto_jwk.JWK.from_pyca(signer.key)
    header = json.dumps(good_header(signer, alg, jti="jwcrypto-1"))
    # jwcrypto's JWS object refuses a compact form whose unencoded payload holds a "." (BODY has
    # one) and cannot write its JSON form with a bytes payload; its JWSCore signs any bytes.
    signed = jwcrypto_jws.JWSCore(alg, key, header, BODY).sign()
    value = f"{signed['protected']}..{signed['signature']}"
    verified = verify_detached(value, BODY, now=NOW)
    assert verified.certificate == signer.certificate
    assert verified.evidence["algorithm"] == alg
    refused("signature.invalid", value, BODY.replace(b"12.50", b"12.5"))


def test_we_verify_what_jwcrypto_signs_through_its_jws_object(keys: Keys) -> None:
    body = b"url-safe~body_without-dots"
    token = jwcrypto_jws.JWS(body)
    header = good_header(keys.ec, jti="jwcrypto-2")
    token.add_signature(jwcrypto_jwk.JWK.from_pyca(keys.ec.key), protected=json.dumps(header))
    protected, payload, signature = token.serialize(compact=True).split(".")
    assert payload == body.decode()  # b64=false: the payload itself, not its base64url
    verified = verify_detached(f"{protected}..{signature}", body, now=NOW)
    assert verified.certificate == keys.ec.certificate
    # The attached form jwcrypto wrote is refused: the body travels as the HTTP body only.
    refused("signature.malformed", f"{protected}.{payload}.{signature}", body)


# --- and the openssl command line -----------------------------------------------------------------


@needs_openssl
@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256"])
def test_openssl_verifies_the_signing_input(keys: Keys, alg: str, tmp_path: Path) -> None:
    signer = keys.ec if alg == "ES256" else keys.rsa
    value = sign_detached(BODY, signer, now=NOW, algorithm=alg)
    protected, _, signature = value.split(".")
    sig = unb64url(signature)
    if alg == "ES256":  # JWS writes r || s; openssl reads the DER of ECDSA-Sig-Value
        sig = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    (tmp_path / "sig.bin").write_bytes(sig)
    # The JWS Signing Input: ASCII(BASE64URL(protected)) || "." || the body bytes as sent.
    (tmp_path / "input.bin").write_bytes(protected.encode("ascii") + b"." + BODY)
    (tmp_path / "pub.pem").write_bytes(
        signer.certificate.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    pss = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"]

    def openssl(input_name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", "pub.pem"]
            + (pss if alg == "PS256" else [])
            + ["-signature", "sig.bin", input_name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )

    result = openssl("input.bin")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verified OK" in result.stdout
    (tmp_path / "other.bin").write_bytes(protected.encode("ascii") + b"." + BODY + b" ")
    assert openssl("other.bin").returncode != 0


# --- hostile and malformed values -------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "   "])
def test_missing(value: str) -> None:
    refused("signature.missing", value)


def test_alg_none(keys: Keys) -> None:
    header = good_header(keys.ec, "none")
    refused("signature.algorithm", f"{b64url(json.dumps(header).encode())}..")
    refused("signature.algorithm", f"{b64url(json.dumps(header).encode())}..AAAA")


def test_alg_hs256_with_the_public_key_as_secret(keys: Keys) -> None:
    header = good_header(keys.ec, "HS256")
    protected = b64url(json.dumps(header).encode())
    secret = keys.ec.certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mac = hmac.new(secret, protected.encode() + b"." + BODY, hashlib.sha256).digest()
    refused("signature.algorithm", f"{protected}..{b64url(mac)}")


@pytest.mark.parametrize("alg", ["RS384", "ES512", "EdDSA", "PS512", "es256"])
def test_other_algorithms(keys: Keys, alg: str) -> None:
    refused("signature.algorithm", forge(good_header(keys.ec, alg), BODY, keys.ec))


def test_alg_not_the_key_type(keys: Keys) -> None:
    # An RS256 header over an EC leaf, an ES256 header over an RSA leaf, ES384 over P-256.
    refused("signature.algorithm", forge(good_header(keys.ec, "RS256"), BODY, keys.ec))
    refused(
        "signature.algorithm", forge(good_header(keys.rsa, "ES256"), BODY, keys.rsa, alg="RS256")
    )
    refused("signature.algorithm", forge(good_header(keys.ec, "ES384"), BODY, keys.ec))


def test_rsa_below_2048_bits(keys: Keys) -> None:
    weak = _rsa_signer(keys.pki, bits=1024)
    refused("signature.algorithm", forge(good_header(weak, "RS256"), BODY, weak, alg="RS256"))


def test_b64_true_attached_payload(keys: Keys) -> None:
    header = good_header(keys.ec, b64=True)
    protected = b64url(json.dumps(header).encode())
    payload = b64url(BODY)
    signature = raw_sign("ES256", keys.ec.key, f"{protected}.{payload}".encode())
    refused("signature.malformed", f"{protected}.{payload}.{b64url(signature)}")
    # Detached but encoded: b64 must be false.
    refused("signature.malformed", f"{protected}..{b64url(signature)}")
    # An ordinary JWS (no b64 at all), detached.
    plain = good_header(keys.ec, b64=None, crit=None)
    refused("signature.malformed", forge(plain, BODY, keys.ec))


def test_attached_unencoded_payload(keys: Keys) -> None:
    refused("signature.malformed", forge(good_header(keys.ec), b"abc", keys.ec, payload_part="abc"))


@pytest.mark.parametrize(
    "crit",
    [None, [], ["jti"], ["b64", "http://openbanking.org.uk/iat"], ["b64", "b64"], "b64", [1]],
)
def test_crit(keys: Keys, crit: Any) -> None:
    header = good_header(keys.ec)
    if crit is None:
        del header["crit"]
    else:
        header["crit"] = crit
    header["http://openbanking.org.uk/iat"] = 1
    refused("signature.malformed", forge(header, BODY, keys.ec))


def test_duplicate_keys_in_the_protected_header(keys: Keys) -> None:
    header = json.dumps(good_header(keys.ec))
    # A second alg, which a last-wins parser would take.
    twice = header[:-1] + ', "alg": "none"}'
    refused("signature.malformed", forge(twice.encode(), BODY, keys.ec))
    # A second b64, and a duplicate nested deeper.
    twice = header[:-1] + ', "b64": true}'
    refused("signature.malformed", forge(twice.encode(), BODY, keys.ec))
    nested = header[:-1] + ', "ext": {"a": 1, "a": 2}}'
    refused("signature.malformed", forge(nested.encode(), BODY, keys.ec))


def test_huge_header(keys: Keys) -> None:
    header = good_header(keys.ec, pad="x" * MAX_HEADER_VALUE)
    error = refused("signature.malformed", forge(header, BODY, keys.ec))
    assert str(MAX_HEADER_VALUE) in error.detail
    refused("signature.malformed", "A" * 10_000_000 + "..AAAA")


def test_too_many_certificates(keys: Keys) -> None:
    header = good_header(keys.ec, x5c=x5c(keys.ec) * 6)
    refused("signature.malformed", forge(header, BODY, keys.ec))


@pytest.mark.parametrize(
    "x5c_value",
    [None, [], "MIIB", [42], ["not base64!"], [b64url(b"\x30\x03\x02\x01\x01")], ["QUJD"]],
)
def test_bad_x5c(keys: Keys, x5c_value: Any) -> None:
    header = good_header(keys.ec)
    if x5c_value is None:
        del header["x5c"]
    else:
        header["x5c"] = x5c_value
    refused("signature.malformed", forge(header, BODY, keys.ec))


def test_x5c_in_base64url_not_base64(keys: Keys) -> None:
    # RFC 7515 §4.1.6: standard base64 (with + / and padding), not base64url.
    der = keys.ec.certificate.public_bytes(serialization.Encoding.DER)
    assert b64url(der) != base64.b64encode(der).decode()  # a certificate has + or / or =
    refused("signature.malformed", forge(good_header(keys.ec, x5c=[b64url(der)]), BODY, keys.ec))
    # Nor PEM's lines.
    pem = base64.encodebytes(der).decode()
    refused("signature.malformed", forge(good_header(keys.ec, x5c=[pem]), BODY, keys.ec))


@pytest.mark.parametrize("iat", [None, "1772445600", True, 1e400, float("nan"), 10**30])
def test_bad_iat(keys: Keys, iat: Any) -> None:
    header = good_header(keys.ec)
    if iat is None:
        del header["iat"]
    else:
        header["iat"] = iat
    refused("signature.malformed", forge(header, BODY, keys.ec))


def test_stale_and_future(keys: Keys) -> None:
    value = sign_detached(BODY, keys.ec, now=NOW)
    verify_detached(value, BODY, now=NOW + timedelta(seconds=360))  # 300 + 60 of skew
    refused("signature.stale", value, now=NOW + timedelta(seconds=361))
    verify_detached(value, BODY, now=NOW - timedelta(seconds=60))
    refused("signature.stale", value, now=NOW - timedelta(seconds=61))
    with pytest.raises(SignatureError) as caught:
        verify_detached(value, BODY, now=NOW + timedelta(seconds=30), max_age_s=10, skew_s=5)
    assert caught.value.code == "signature.stale"


def test_stale_only_once_the_signature_verifies(keys: Keys) -> None:
    value = sign_detached(BODY, keys.ec, now=NOW - timedelta(days=1))
    refused("signature.invalid", value, BODY + b"x")
    refused("signature.stale", value)


def test_swapped_x5c_another_partys_certificate(keys: Keys) -> None:
    # A signature by be-platform presented with fr-region's certificate in x5c.
    value = sign_detached(BODY, keys.ec, now=NOW)
    protected, _, signature = value.split(".")
    header = json.loads(unb64url(protected))
    header["x5c"] = x5c(keys.other)
    swapped = f"{b64url(json.dumps(header).encode())}..{signature}"
    refused("signature.invalid", swapped)
    # Or signed by be-platform over a header that names fr-region.
    refused("signature.invalid", forge(good_header(keys.other), BODY, keys.ec))


def test_unknown_parameters_not_critical_are_ignored(keys: Keys) -> None:
    header = good_header(keys.ec, typ="JOSE", kid="k1", cty="json")
    header["http://openbanking.org.uk/iss"] = "someone"
    verify_detached(forge(header, BODY, keys.ec), BODY, now=NOW)
    refused("signature.malformed", forge(good_header(keys.ec, typ=1), BODY, keys.ec))
    refused("signature.malformed", forge(good_header(keys.ec, jti=[1]), BODY, keys.ec))


def test_naive_now_is_a_programming_error(keys: Keys) -> None:
    value = sign_detached(BODY, keys.ec, now=NOW)
    with pytest.raises(ValueError, match="timezone"):
        verify_detached(value, BODY, now=NOW.replace(tzinfo=None))


def test_signature_of_another_body_or_garbage(keys: Keys) -> None:
    protected = sign_detached(BODY, keys.ec, now=NOW).split(".")[0]
    other = sign_detached(b"other", keys.ec, now=NOW).split(".")[2]
    refused("signature.invalid", f"{protected}..{other}")
    refused("signature.invalid", f"{protected}..{b64url(b'x' * 64)}")
    refused("signature.invalid", f"{protected}..{b64url(b'x' * 63)}")


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "a.b",
        "a..b.c",
        "eyJ.ey.",
        "!!!..AAAA",
        "eyJhbGciOiJFUzI1NiJ9..AA+A",
        "eyJhbGciOiJFUzI1NiJ9..AAA=",
        "eyJhbGciOiJFUzI1NiJ9..A",
        "eyJhbGciOiJFUzI1NiJ9..AB",  # not canonical: trailing bits set
        "eyJhbGciOiJFUzI1NiJ9..",
        "ééé..AAAA",
        ".." + "AAAA",
    ],
)
def test_garbage(value: str) -> None:
    refused("signature.malformed", value)


@pytest.mark.parametrize(
    "raw",
    [b"[1, 2]", b'"ES256"', b"null", b"{", b"\xff\xfe{}", b'{"alg": NaN}', b"{}", b'{"alg": 1}'],
)
def test_protected_header_not_a_json_object(keys: Keys, raw: bytes) -> None:
    refused("signature.malformed", forge(raw, BODY, keys.ec))


def test_detached_payload_part_with_b64_false_is_refused_even_if_it_is_the_body(
    keys: Keys,
) -> None:
    header = good_header(keys.ec)
    refused(
        "signature.malformed",
        forge(header, b"abc", keys.ec, payload_part="abc"),
        body=b"abc",
    )
