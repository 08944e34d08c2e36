"""Certificates at the hub's door, over real mutual TLS: rotation (two valid certificates of one
party), revocation by CRL (re-read while the hub runs), expiry, and RSA application certificates.
Each test has a PKI of its own: revoking must not reach other tests."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.certs import DevPki, TlsFiles, revoke
from gateway.testing import RunningHub, running_hub, signed_client

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def own(tmp_path: Path, pki: DevPki) -> Iterator[RunningHub]:
    copy = DevPki.at(Path(shutil.copytree(pki.directory, tmp_path / "pki")))
    with running_hub(tmp_path / "hub", pki=copy, sandbox=False, delivery_workers=0) as live:
        yield live


def _send(live: RunningHub, tls: TlsFiles, signer: TlsFiles | None = None) -> httpx.Response:
    body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
    body["header"]["messageId"] = str(uuid.uuid4())
    content = json.dumps(body).encode()
    headers = dict(JSON)
    if signer is not None:
        from gateway import jws
        from gateway.signing import SigningKey

        key = SigningKey.from_files(signer.cert, signer.key)
        headers[jws.HEADER] = jws.sign_detached(content, key)
    with signed_client(live.url, tls, sign=signer is None) as client:
        return client.post("/v1/messages", content=content, headers=headers)


def test_a_party_may_hold_two_certificates_at_once(own: RunningHub) -> None:
    first, second = own.pki.party("be-platform"), own.pki.variant("be-platform", "2")
    assert _send(own, first).status_code == 202
    assert _send(own, second).status_code == 202
    # One on the connection, the other on the message: both the portal's.
    assert _send(own, first, signer=second).status_code == 202


def test_an_rsa_application_certificate_connects_and_signs(own: RunningHub) -> None:
    assert _send(own, own.pki.variant("be-platform", "rsa")).status_code == 202


def test_a_revoked_certificate_passes_tls_but_not_the_door(own: RunningHub) -> None:
    revoked = own.pki.variant("be-platform", "revoked")
    answer = _send(own, revoked)
    assert answer.status_code == 401
    assert answer.json()["code"] == "cert.revoked"
    # Signing with it from a good connection is refused the same way.
    answer = _send(own, own.pki.party("be-platform"), signer=revoked)
    assert (answer.status_code, answer.json()["code"]) == (401, "cert.revoked")


def test_an_expired_certificate_does_not_get_through_the_handshake(own: RunningHub) -> None:
    with pytest.raises(httpx.TransportError):
        _send(own, own.pki.variant("be-platform", "expired"))


def test_a_crl_changed_while_the_hub_runs_is_read_again(own: RunningHub) -> None:
    second = own.pki.variant("be-platform", "2")
    assert _send(own, second).status_code == 202
    assert revoke(own.pki, second.cert)
    deadline = time.monotonic() + 10
    while True:  # the trust store looks at its files at most once a second
        answer = _send(own, second)
        if answer.status_code != 202 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (answer.status_code, answer.json()["code"]) == (401, "cert.revoked")
    # The party's other certificate still works: rotation without a gap.
    assert _send(own, own.pki.party("be-platform")).status_code == 202
