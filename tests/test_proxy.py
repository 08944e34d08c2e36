"""The hub behind a TLS-terminating reverse proxy: a real nginx, configured by the documented
example (docs/deploy/nginx.conf), in front of the hub listening plain HTTP on loopback.

The forwarded certificate is believed only from the configured proxy addresses, and is checked
by the hub as if it had come over its own TLS (chain, revocation, owner).
"""

from __future__ import annotations

import json
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from gateway.certs import DevPki
from gateway.errors import AuthenticationError
from gateway.identities import Authenticator, parse_networks
from gateway.service.tls import client_ssl_context
from gateway.signatures import SigningAuth
from gateway.signing import SigningKey
from gateway.testing import RunningHub, running_hub
from tests.nginx import running_nginx

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = pytest.mark.slow


def _application() -> bytes:
    body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
    body["header"]["messageId"] = str(uuid.uuid4())
    return json.dumps(body).encode()


def _behind_proxy(tmp_path: Path, pki: DevPki, *proxies: str) -> AbstractContextManager[RunningHub]:
    """The hub alone, listening plain HTTP behind (trusting) ``proxies``."""
    return running_hub(
        tmp_path / "hub",
        pki=pki,
        sandbox=False,
        delivery_workers=0,
        behind_proxy=True,
        trusted_proxies=proxies,
    )


def _forwarded(pem: Path) -> str:
    return quote(pem.read_text(), safe="-._~")  # as nginx's $ssl_client_escaped_cert


def test_through_nginx_a_party_sends_and_the_operator_checks_health(
    tmp_path: Path, pki: DevPki
) -> None:
    with (
        _behind_proxy(tmp_path, pki, "127.0.0.1") as running,
        running_nginx(
            upstream=running.url,
            ca=pki.ca_cert,
            cert=pki.hub_cert,
            key=pki.hub_key,
            crl=pki.crl,
            tmp=tmp_path / "nginx",
        ) as proxy,
    ):
        assert running.url.startswith("http://")
        party = pki.party("be-platform")
        signer = SigningAuth(SigningKey.from_files(party.cert, party.key))
        with httpx.Client(
            base_url=proxy.url, verify=client_ssl_context(party), auth=signer, timeout=10
        ) as client:
            response = client.post(
                "/v1/messages",
                content=_application(),
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 202, response.text
            message_id = response.json()["messageId"]
            assert client.get(f"/v1/messages/{message_id}").status_code == 200
            # The portal's certificate is no operator's, behind the proxy as in front of it.
            refused = client.get("/healthz")
            assert refused.status_code == 403
            assert refused.json()["code"] == "authz.role-required"
        with httpx.Client(
            base_url=proxy.url, verify=client_ssl_context(pki.role("operator")), timeout=10
        ) as operator:
            assert operator.get("/healthz").json() == {"status": "ok"}

        # A revoked certificate: nginx itself refuses it (it reads the same CRL).
        revoked = pki.variant("be-platform", "revoked")
        with httpx.Client(
            base_url=proxy.url, verify=client_ssl_context(revoked), timeout=10
        ) as client:
            assert client.get("/v1/messages/x").status_code == 400

        # Straight to the hub, past the proxy: without a forwarded certificate there is nobody.
        with httpx.Client(base_url=running.url, timeout=10) as direct:
            response = direct.get("/healthz")
            assert response.status_code == 401
            assert response.json()["code"] == "auth.unauthenticated"


def test_a_forwarded_certificate_from_elsewhere_is_refused(tmp_path: Path, pki: DevPki) -> None:
    """The hub trusts 10.9.8.7 as its proxy: a loopback caller forging the header is refused,
    whatever certificate it names."""
    with (
        _behind_proxy(tmp_path, pki, "10.9.8.7") as running,
        httpx.Client(base_url=running.url, timeout=10) as direct,
    ):
        operator = _forwarded(pki.role("operator").cert)
        response = direct.get("/healthz", headers={"X-SSL-Client-Cert": operator})
        assert response.status_code == 403
        assert response.json()["code"] == "auth.untrusted-proxy"
        # An X-Forwarded-For naming the proxy changes nothing: the peer address decides.
        response = direct.get(
            "/healthz", headers={"X-SSL-Client-Cert": operator, "X-Forwarded-For": "10.9.8.7"}
        )
        assert response.json()["code"] == "auth.untrusted-proxy"


def test_a_forwarded_certificate_is_checked_like_a_tls_one(tmp_path: Path, pki: DevPki) -> None:
    """From the trusted proxy: a revoked, an expired and a garbled certificate are refused by
    the hub's own checks, a valid one maps to its party."""
    with (
        _behind_proxy(tmp_path, pki, "127.0.0.0/8") as running,
        httpx.Client(base_url=running.url, timeout=10) as direct,
    ):

        def as_(value: str) -> httpx.Response:
            return direct.get("/healthz", headers={"X-SSL-Client-Cert": value})

        assert as_(_forwarded(pki.role("operator").cert)).status_code == 200
        assert as_(_forwarded(pki.variant("be-platform", "revoked").cert)).json()["code"] == (
            "cert.revoked"
        )
        assert as_(_forwarded(pki.variant("be-platform", "expired").cert)).json()["code"] == (
            "cert.expired"
        )
        assert as_("not%20a%20certificate").json()["code"] == "cert.malformed"
        party = as_(_forwarded(pki.party("be-platform").cert))
        assert party.json()["code"] == "authz.role-required"  # known, but no operator


def test_proxy_addresses_are_addresses_or_networks(pki: DevPki) -> None:
    assert [str(n) for n in parse_networks(["127.0.0.1", "10.0.0.0/8", "::1"])] == [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "::1/128",
    ]
    from gateway.config import HubConfig
    from gateway.trust import TrustStore

    parties = HubConfig.load().parties
    authenticator = Authenticator(
        TrustStore([pki.ca_cert]), parties, proxies=["10.0.0.0/8"], behind_proxy=True
    )
    assert authenticator.from_proxy("10.1.2.3")
    assert authenticator.from_proxy("::ffff:10.1.2.3")  # a dual-stack listener's IPv4 peer
    assert not authenticator.from_proxy("11.1.2.3")
    assert not authenticator.from_proxy(None)
    assert not authenticator.from_proxy("not-an-address")
    operator = _forwarded(pki.role("operator").cert)
    assert authenticator.authenticate(None, "10.1.2.3", operator).name == "operator"
    # A hub that ends TLS itself believes no header, not even from a proxy address.
    ends_tls = Authenticator(TrustStore([pki.ca_cert]), parties, proxies=["10.0.0.0/8"])
    with pytest.raises(AuthenticationError) as caught:
        ends_tls.authenticate(None, "10.1.2.3", operator)
    assert caught.value.code == "auth.untrusted-proxy"
