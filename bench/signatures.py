"""What message signatures cost per message, against their floor.

For each format and key type, in one run: signing and verifying one of the procedure's messages
(the portal's application for the detached JWS, Wallonia's status update for WS-Security), the
whole inbound check of the hub (``SignatureVerifier``: signature, certificate chain and CRL from
the trust store's cache, owner, replay cache), and the floor: the bare ``cryptography`` signature
and verification of the same bytes with the same key (WS-Security: plus the exclusive C14N of
the Body, Timestamp and token that any implementation must compute).

Last line: ``jws_es256_verify_us=… wsse_ec_verify_us=… hub_check_jws_us=… hub_check_wsse_us=…
jws_ratio=… wsse_ratio=…`` (ratio: the hub's whole inbound check over its floor, the bare
verification).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from lxml import etree

from gateway import jws, wssec
from gateway.certs import init_dev_pki
from gateway.config import HubConfig, Settings
from gateway.signatures import SignatureVerifier
from gateway.signing import SigningKey
from gateway.trust import TrustStore
from gateway.xml import parse_xml

HOME = Path(__file__).resolve().parents[1]
_SIGNED_PARTS = ("Body", "Timestamp", "BinarySecurityToken", "SignedInfo")


def per_call_us(work: Callable[[], object], seconds: float) -> float:
    """Microseconds per call of ``work``, run for about ``seconds``."""
    calls = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(20):
            work()
        calls += 20
    return elapsed / calls * 1e6


def floor_verify(signer: SigningKey, data: bytes) -> Callable[[], object]:
    """The bare verification of a signature over ``data`` with the signer's public key."""
    key = signer.key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ec_public = key.public_key()
        ec_signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
        return lambda: ec_public.verify(ec_signature, data, ec.ECDSA(hashes.SHA256()))
    assert isinstance(key, rsa.RSAPrivateKey)
    rsa_public = key.public_key()
    rsa_signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return lambda: rsa_public.verify(rsa_signature, data, padding.PKCS1v15(), hashes.SHA256())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    args = parser.parse_args(argv)
    config = HubConfig.load(Settings(home=HOME))
    with tempfile.TemporaryDirectory() as tmp:
        pki = init_dev_pki(Path(tmp), config.parties.identities())
        trust = TrustStore([pki.ca_cert], [pki.crl])
        verifier = SignatureVerifier(trust, config.parties)
        portal = SigningKey.from_files(pki.party("be-platform").cert, pki.party("be-platform").key)
        rsa_files = pki.variant("be-platform", "rsa")
        portal_rsa = SigningKey.from_files(rsa_files.cert, rsa_files.key)
        wallonia_files = pki.party("be-wal-spw")
        wallonia = SigningKey.from_files(wallonia_files.cert, wallonia_files.key)

        body = json.loads((HOME / "examples/be-platform/application.submitted.json").read_bytes())
        body["header"]["messageId"] = str(uuid.uuid4())
        rest = json.dumps(body).encode()
        envelope = (HOME / "examples/be-wal-spw/status.updated.xml").read_bytes()

        results: dict[str, float] = {}
        for name, signer in (("es256", portal), ("ps256", portal_rsa)):
            value = jws.sign_detached(rest, signer)
            now = verifier.clock()
            results[f"jws_{name}_sign_us"] = per_call_us(
                lambda s=signer: jws.sign_detached(rest, s), args.seconds
            )
            results[f"jws_{name}_verify_us"] = per_call_us(
                lambda v=value, at=now: jws.verify_detached(v, rest, now=at), args.seconds
            )
            results[f"floor_{name}_us"] = per_call_us(floor_verify(signer, rest), args.seconds)

        def hub_check_jws() -> None:
            # Each sending is signed anew (the replay cache refuses a second look at one).
            verifier.rest("be-platform", rest, jws.sign_detached(rest, portal))

        results["hub_check_jws_us"] = (
            per_call_us(hub_check_jws, args.seconds) - results["jws_es256_sign_us"]
        )

        signed = wssec.sign_envelope(envelope, wallonia)
        now = verifier.clock()
        results["wsse_ec_sign_us"] = per_call_us(
            lambda: wssec.sign_envelope(envelope, wallonia), args.seconds
        )
        results["wsse_ec_verify_us"] = per_call_us(
            lambda: wssec.verify_envelope(parse_xml(signed), now=now), args.seconds
        )
        tree = parse_xml(signed)
        signed_parts = [
            e
            for e in tree.iter()
            if isinstance(e.tag, str)
            and etree.QName(e).localname
            in ("Body", "Timestamp", "BinarySecurityToken", "SignedInfo")
        ]
        floor_crypto = floor_verify(wallonia, signed)

        def floor_wsse() -> None:
            for element in signed_parts:
                etree.tostring(element, method="c14n", exclusive=True)
            parse_xml(signed)
            floor_crypto()

        results["floor_wsse_ec_us"] = per_call_us(floor_wsse, args.seconds)

        def hub_check_wsse() -> None:
            verifier.soap("be-wal-spw", parse_xml(wssec.sign_envelope(envelope, wallonia)), "1.1")

        results["hub_check_wsse_us"] = (
            per_call_us(hub_check_wsse, args.seconds) - results["wsse_ec_sign_us"]
        )
        results["trust_validate_cached_us"] = per_call_us(
            lambda: trust.validate(portal.certificate), args.seconds
        )

    for key, value in results.items():
        print(f"{key:28} {value:10.1f}")
    jws_ratio = results["hub_check_jws_us"] / results["floor_es256_us"]
    wsse_ratio = results["hub_check_wsse_us"] / results["floor_wsse_ec_us"]
    print(
        f"jws_es256_verify_us={results['jws_es256_verify_us']:.1f}"
        f" wsse_ec_verify_us={results['wsse_ec_verify_us']:.1f}"
        f" hub_check_jws_us={results['hub_check_jws_us']:.1f}"
        f" hub_check_wsse_us={results['hub_check_wsse_us']:.1f}"
        f" jws_ratio={jws_ratio:.2f} wsse_ratio={wsse_ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
