"""A detached JWS over the exact bytes of an HTTP body (RFC 7515, unencoded payload RFC 7797).

REST back offices sign each request body and the hub signs what it sends them. The signature
travels in one HTTP header, ``X-JWS-Signature``, in compact serialization with the payload part
left empty (RFC 7515 appendix F)::

    BASE64URL(protected) ".." BASE64URL(signature)

and the JWS Signing Input is ``ASCII(BASE64URL(protected)) || "." || body`` — the body bytes as
they are sent, never re-encoded (``b64: false``, which ``crit`` makes every verifier understand or
refuse). The protected header carries ``alg`` (RS256, PS256, ES256 or ES384; never ``none`` nor an
HMAC), ``b64``, ``crit``, ``x5c`` (the signer's chain, leaf first, standard base64 DER as
RFC 7515 §4.1.6 says), ``iat`` (the signing time, a NumericDate) and ``jti`` (random: no two
signatures are the same); ``typ`` is allowed. Carrying the certificate makes the signature
self-contained: the evidence log keeps it with the body and an auditor checks it offline
(docs/adr/0005-rest-message-signatures-detached-jws.md).

Library: cryptography directly, not joserfc. joserfc 1.8 implements RFC 7797 but its compact
path does not do this job cleanly: it leaves a payload made only of URL-safe characters attached
instead of detached, it decodes the payload as UTF-8 when signing (a body that is not UTF-8 makes
it raise ``UnicodeDecodeError``), its limits (512-byte header, 128 kB payload) must be overridden
for any ``x5c`` header or real body, and it parses the header with a last-wins JSON decoder — so
the header had to be parsed here anyway, strictly, to name each refusal by its code. What would
be left to joserfc is four primitives; they are written here (``_sign`` / ``_verify``, RFC 7518
§3.3–3.5: PKCS #1 v1.5, PSS with MGF1 and a salt of the hash's length, ECDSA as raw ``r || s``),
and the tests check them against an independent implementation (jwcrypto, both ways) and the
``openssl`` command line.

What ``verify_detached`` does not do: validate the chain, check revocation, or map the certificate
to a party — the caller does that (``gateway.trust``) — nor refuse a replay: the caller passes the
result to ``gateway.signing.ReplayCache``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from gateway.errors import ConfigurationError, SignatureError
from gateway.signing import MIN_RSA_BITS, SigningKey, VerifiedSignature, der_chain

__all__ = [
    "ALGORITHMS",
    "HEADER",
    "MAX_CHAIN",
    "MAX_HEADER_VALUE",
    "sign_detached",
    "verify_detached",
]

HEADER: Final = "X-JWS-Signature"
# The algorithms accepted, each matched to its key type by _key_problem. Nothing else: no "none",
# no HMAC (whose "secret" an attacker would pick to be the public key), nor RS384/ES512, which
# nobody uses here.
ALGORITHMS: Final = ("RS256", "PS256", "ES256", "ES384")
# The whole header value: enough for five RSA-4096 certificates in x5c, not for a memory attack.
MAX_HEADER_VALUE: Final = 16 * 1024
MAX_CHAIN: Final = 5  # certificates in x5c (leaf first)
# Header parameters that may be named in "crit": only b64 (RFC 7797) is understood.
_UNDERSTOOD_CRITICAL: Final = frozenset({"b64"})
_EC_CURVES: Final = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}
# The order of each curve's group: an ECDSA signature (r, s) verifies as (r, n - s) too.
_EC_ORDERS: Final = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def _is_numeric_date(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("must be a NumericDate")


def sign_detached(
    body: bytes,
    signer: SigningKey,
    *,
    now: datetime | None = None,
    algorithm: str | None = None,
) -> str:
    """The ``X-JWS-Signature`` value signing ``body`` exactly as it will be sent.

    The algorithm follows the key: ES256 for P-256, ES384 for P-384, PS256 for RSA (or RS256 if
    ``algorithm`` asks for it, for a receiver that knows PKCS #1 v1.5 only).
    """
    moment = _aware(now or datetime.now(UTC), "now")
    alg = algorithm or _default_algorithm(signer.key)
    if alg not in ALGORITHMS:
        raise ConfigurationError(
            f"{alg!r} is not one of the JWS algorithms {', '.join(ALGORITHMS)}"
        )
    problem = _key_problem(alg, signer.key.public_key())
    if problem:
        raise ConfigurationError(f"the signing key cannot sign {alg}: {problem}")
    protected: dict[str, Any] = {
        "alg": alg,
        "b64": False,
        "crit": ["b64"],
        "x5c": [base64.b64encode(der).decode("ascii") for der in der_chain(signer.chain)],
        "iat": int(moment.timestamp()),
        "jti": secrets.token_urlsafe(18),
    }
    encoded = _b64url(json.dumps(protected, separators=(",", ":")).encode("ascii"))
    signature = _sign(alg, signer.key, encoded.encode("ascii") + b"." + body)
    return f"{encoded}..{_b64url(signature)}"


def verify_detached(
    value: str,
    body: bytes,
    *,
    now: datetime,
    max_age_s: int = 300,
    skew_s: int = 60,
) -> VerifiedSignature:
    """Verify an ``X-JWS-Signature`` value over ``body`` with the key of its ``x5c`` leaf.

    Refused with a ``SignatureError``: ``signature.missing`` (no value), ``signature.malformed``
    (not a detached compact JWS with an unencoded payload, ``x5c`` and ``iat``),
    ``signature.algorithm`` (an algorithm not accepted, or not the leaf key's),
    ``signature.invalid`` (does not verify over these bytes with that key), ``signature.stale``
    (``iat`` older than ``max_age_s`` + ``skew_s``, or more than ``skew_s`` ahead of ``now``).
    The certificate is not trusted yet: the caller validates the chain and maps it to a party.
    """
    moment = _aware(now, "now")
    if not value or not value.strip():
        raise SignatureError(f"no {HEADER} header: sign the body", code="signature.missing")
    if len(value) > MAX_HEADER_VALUE:
        raise _malformed(f"{HEADER} of {len(value)} characters exceeds {MAX_HEADER_VALUE}")
    parts = value.split(".")
    if len(parts) != 3:
        raise _malformed("not a JWS in compact serialization (three parts joined by '.')")
    header_part, payload_part, signature_part = parts
    if payload_part:
        raise _malformed("the payload part must be empty: the body is the detached payload")
    header = _parse_header(header_part)
    signature = _base64url(signature_part, "the signature")
    chain = _certificates(header)
    alg = header["alg"]
    problem = _key_problem(alg, chain[0].public_key())
    if problem:
        raise SignatureError(f"alg {alg}: {problem}", code="signature.algorithm")

    signing_input = header_part.encode("ascii") + b"." + body
    if not _verify(alg, chain[0].public_key(), signature, signing_input):
        raise SignatureError(
            "the signature does not verify over the body received with the key of its x5c leaf",
            code="signature.invalid",
        )

    # Checked once the signature is known to be the signer's: a stale verdict is then about iat
    # as the signer wrote it.
    signed_at = datetime.fromtimestamp(header["iat"], UTC)
    if signed_at < moment - timedelta(seconds=max_age_s + skew_s):
        raise SignatureError(
            f"signed at {_iso(signed_at)}, more than {max_age_s}s (+{skew_s}s of clock skew) "
            f"before {_iso(moment)}: sign each sending anew",
            code="signature.stale",
        )
    if signed_at > moment + timedelta(seconds=skew_s):
        raise SignatureError(
            f"signed at {_iso(signed_at)}, more than {skew_s}s after {_iso(moment)}: "
            "check the signer's clock",
            code="signature.stale",
        )
    return VerifiedSignature(
        format="jws",
        certificate=chain[0],
        chain=chain[1:],
        signed_at=signed_at,
        # The last moment this signature is accepted (skew included): the replay cache must
        # remember it that long, or a replay in the skew's last seconds would pass.
        expires_at=signed_at + timedelta(seconds=max_age_s + skew_s),
        fingerprint=_fingerprint(alg, signature),
        evidence={
            "format": "jws",
            "value": value,
            "algorithm": alg,
            "signedAt": _iso(signed_at),
        },
    )


def _parse_header(part: str) -> dict[str, Any]:
    """The protected header, parsed strictly; ``signature.malformed`` for anything amiss."""
    raw = _base64url(part, "the protected header")
    try:
        header = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _malformed(f"the protected header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise _malformed("the protected header is not a JSON object")
    if not isinstance(header.get("alg"), str):
        raise _malformed("the protected header has no alg")
    if header["alg"] not in ALGORITHMS:
        raise SignatureError(
            f"alg {header['alg']!r} is not accepted: sign with one of {', '.join(ALGORITHMS)}",
            code="signature.algorithm",
        )
    if "b64" not in header:
        raise _malformed("the protected header has no b64: the payload must be unencoded (false)")
    if header["b64"] is not False:
        raise _malformed("b64 must be false: the body bytes are signed as they are")
    crit = header.get("crit")
    if not isinstance(crit, list) or not all(isinstance(name, str) for name in crit):
        raise _malformed('crit must list the critical parameters, at least "b64"')
    if "b64" not in crit:
        raise _malformed('crit must name "b64" (RFC 7797 §6)')
    unknown = sorted(set(crit) - _UNDERSTOOD_CRITICAL)
    if unknown or len(set(crit)) != len(crit):
        raise _malformed(f"crit names parameters this hub does not understand: {unknown or crit}")
    if "iat" not in header:
        raise _malformed("the protected header has no iat (signing time)")
    try:
        _is_numeric_date(header["iat"])
        datetime.fromtimestamp(header["iat"], UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise _malformed(f"iat is not a NumericDate: {header['iat']!r}") from exc
    for name in ("jti", "typ"):
        if name in header and not isinstance(header[name], str):
            raise _malformed(f"{name} must be a string")
    return header


def _certificates(header: dict[str, Any]) -> tuple[x509.Certificate, ...]:
    x5c = header.get("x5c")
    if x5c is None:
        raise _malformed("the protected header has no x5c (the signer's certificate)")
    if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
        raise _malformed("x5c must be a non-empty array of base64 certificates")
    if len(x5c) > MAX_CHAIN:
        raise _malformed(f"x5c holds {len(x5c)} certificates, more than {MAX_CHAIN}")
    chain = []
    for index, text in enumerate(x5c):
        try:
            der = base64.b64decode(text, validate=True)
            canonical = base64.b64encode(der).decode("ascii") == text
            certificate = x509.load_der_x509_certificate(der)
        except (binascii.Error, ValueError) as exc:
            raise _malformed(f"x5c[{index}] is not a base64 DER certificate") from exc
        if not canonical:
            raise _malformed(f"x5c[{index}] is not canonical base64")
        chain.append(certificate)
    return tuple(chain)


def _key_problem(alg: str, key: PublicKeyTypes) -> str | None:
    """Why ``key`` cannot carry ``alg``, or None if it can."""
    if alg not in ALGORITHMS:
        return f"not one of {', '.join(ALGORITHMS)}"
    if alg in _EC_CURVES:
        curve = _EC_CURVES[alg]
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
            return f"needs an EC key on {curve.name}"
        return None
    if not isinstance(key, rsa.RSAPublicKey):
        return "needs an RSA key"
    if key.key_size < MIN_RSA_BITS:
        return f"RSA keys of {key.key_size} bits are too weak (at least {MIN_RSA_BITS})"
    return None


def _hash(alg: str) -> hashes.HashAlgorithm:
    return hashes.SHA384() if alg.endswith("384") else hashes.SHA256()


def _pss(alg: str) -> padding.PSS:
    # RFC 7518 §3.5: MGF1 with the same hash, a salt as long as the hash's output.
    return padding.PSS(mgf=padding.MGF1(_hash(alg)), salt_length=_hash(alg).digest_size)


def _sign(alg: str, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """The JWS Signature (RFC 7518 §3) of ``data``; ``alg`` already matched to ``key``."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_hash(alg))))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")  # JWS: r || s, fixed width
    if alg.startswith("PS"):
        return key.sign(data, _pss(alg), _hash(alg))
    return key.sign(data, padding.PKCS1v15(), _hash(alg))


def _verify(alg: str, key: PublicKeyTypes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is ``alg``'s over ``data`` by ``key`` (matched by ``_key_problem``)."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_hash(alg)))
        elif isinstance(key, rsa.RSAPublicKey):
            if len(signature) != (key.key_size + 7) // 8:
                return False
            scheme = _pss(alg) if alg.startswith("PS") else padding.PKCS1v15()
            key.verify(signature, data, scheme, _hash(alg))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _default_algorithm(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "PS256"
    for alg, curve in _EC_CURVES.items():
        if isinstance(key.curve, curve):
            return alg
    raise ConfigurationError(f"no JWS algorithm for an EC key on {key.curve.name}")


def _fingerprint(alg: str, signature: bytes) -> str:
    """SHA-256 of the signature bytes, ECDSA's in low-s form: (r, s) and (r, n - s) both verify,
    and a replay must not pass the replay cache by flipping s."""
    order = _EC_ORDERS.get(alg)
    if order is not None and len(signature) % 2 == 0:
        half = len(signature) // 2
        s = int.from_bytes(signature[half:], "big")
        if s > order // 2:
            signature = signature[:half] + (order - s).to_bytes(half, "big")
    return hashlib.sha256(signature).hexdigest()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _base64url(text: str, what: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): one spelling per byte string."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1 or not text:
        raise _malformed(f"{what} is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _malformed(f"{what} is not base64url") from exc
    if _b64url(data) != text:
        raise _malformed(f"{what} is not canonical base64url")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _malformed(detail: str) -> SignatureError:
    return SignatureError(detail, code="signature.malformed")


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
