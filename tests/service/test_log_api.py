"""The evidence log as an auditor reads it, over real HTTPS with mutual TLS.

An auditor fetches signed checkpoints, records and proofs, and checks them with
``gateway.proofs`` against the root the checkpoint signs — trusting only the hub's evidence
certificate from the PKI, never the hub's word. Parties and operators are refused every route.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import evidence
from gateway.certs import DevPki, identity_of
from gateway.errors import PROBLEMS, InvalidProofError
from gateway.proofs import verify_consistency, verify_inclusion
from gateway.service.app import create_app
from gateway.service.log import LogTree
from gateway.service.tls import client_ssl_context
from gateway.store.sqlite import SqliteStore
from gateway.testing import RunningHub, running_hub
from tests.conftest import post_applications

pytestmark = pytest.mark.slow

ROUTES = (
    "/v1/log/checkpoint",
    "/v1/log/proof/inclusion?index=0",
    "/v1/log/proof/consistency?first=1",
    "/v1/log/records/0",
)


@dataclass
class LogHub:
    running: RunningHub
    before_checkpoint: dict[str, httpx.Response] = field(default_factory=dict)
    first: dict[str, Any] = field(default_factory=dict)  # the earlier checkpoint, as signed

    def client(self, role: str | None = None, party: str | None = None) -> httpx.Client:
        pki = self.running.pki
        files = pki.role(role) if role else pki.party(party or "be-platform")
        return httpx.Client(base_url=self.running.url, verify=client_ssl_context(files), timeout=10)

    def auditor(self) -> httpx.Client:
        return self.client(role="auditor")


def _send(running: RunningHub, count: int) -> None:
    post_applications(running, count)
    with running.client("be-platform") as client:
        # A refused message is sealed too (exchange.rejected): the log holds both kinds.
        refused = client.post(
            "/v1/messages", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert refused.status_code == 400


@pytest.fixture(scope="module")
def log_hub(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> Iterator[LogHub]:
    """A hub whose log has two signed checkpoints, and what the auditor got before the first."""
    with running_hub(
        tmp_path_factory.mktemp("loghub"), sandbox=False, pki=pki, delivery_workers=0
    ) as running:
        state = LogHub(running)
        with state.auditor() as auditor:
            for route in ("/v1/log/checkpoint", "/v1/log/proof/inclusion?index=0"):
                state.before_checkpoint[route] = auditor.get(route)
        _send(running, 5)
        first = running.hub.checkpoint()
        with state.auditor() as auditor:
            state.first = auditor.get(f"/v1/log/checkpoint?size={first.tree_size}").json()
        _send(running, 6)
        running.hub.checkpoint()
        yield state


def _public_key(pki: DevPki) -> ec.EllipticCurvePublicKey:
    """The auditor's trust anchor: the hub's evidence certificate, read from the PKI."""
    key = x509.load_pem_x509_certificate(pki.signing_cert.read_bytes()).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _checked(checkpoint: dict[str, Any], pki: DevPki) -> bytes:
    """The root a checkpoint signs, once its signature is checked."""
    statement = evidence.checkpoint_statement(
        checkpoint["treeSize"], checkpoint["rootHash"], checkpoint["time"], checkpoint["keyId"]
    )
    assert evidence.verify_signature(_public_key(pki), statement, checkpoint["signature"])
    return bytes.fromhex(checkpoint["rootHash"])


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["type"] == f"urn:guichet:problem:{code}"
    assert PROBLEMS[code].status == status
    return body


def test_the_auditor_certificate_names_the_auditor_role(pki: DevPki) -> None:
    cert = x509.load_pem_x509_certificate(pki.role("auditor").cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:be:guichet:role:auditor"
    ]
    identity = identity_of(cert)
    assert identity is not None
    assert (identity.kind, identity.name) == ("role", "auditor")


def test_before_any_checkpoint_there_is_none_to_give(log_hub: LogHub) -> None:
    for response in log_hub.before_checkpoint.values():
        body = _problem(response, 404, "log.no-checkpoint")
        assert "checkpoint" in body["detail"]


def test_the_latest_checkpoint_is_signed_and_covers_the_log(log_hub: LogHub) -> None:
    with log_hub.auditor() as auditor:
        checkpoint = auditor.get("/v1/log/checkpoint").json()
    assert set(checkpoint) == {"treeSize", "rootHash", "time", "keyId", "signature"}
    root = _checked(checkpoint, log_hub.running.pki)
    leaves = log_hub.running.hub.store.leaves()
    assert checkpoint["treeSize"] == len(leaves) > log_hub.first["treeSize"]
    assert root == evidence.merkle_root([leaf.leaf_hash for leaf in leaves])
    assert checkpoint["keyId"] == log_hub.running.hub.signer.key_id


def test_every_record_is_proven_included_in_the_signed_root(log_hub: LogHub) -> None:
    pki = log_hub.running.pki
    with log_hub.auditor() as auditor:
        checkpoint = auditor.get("/v1/log/checkpoint").json()
        root, size = _checked(checkpoint, pki), checkpoint["treeSize"]
        events = set()
        for index in range(size):
            record = auditor.get(f"/v1/log/records/{index}").json()
            leaf = base64.b64decode(record["leaf"])
            leaf_hash = evidence.leaf_hash(leaf)  # recomputed, not taken from the hub
            assert leaf_hash.hex() == record["leafHash"]
            assert json.loads(leaf) == record["record"]
            assert evidence.canonical_json(record["record"]) == leaf
            events.add(record["record"]["event"])
            receipt = evidence.receipt_statement(
                record["leafHash"], index, record["time"], record["keyId"]
            )
            assert evidence.verify_signature(_public_key(pki), receipt, record["signature"])

            proof = auditor.get(f"/v1/log/proof/inclusion?index={index}").json()
            assert (proof["leafIndex"], proof["treeSize"]) == (index, size)
            assert proof["leafHash"] == record["leafHash"]
            path = [bytes.fromhex(h) for h in proof["inclusionPath"]]
            verify_inclusion(leaf_hash, index, size, path, root)
            # The same leaf looked up by its hash.
            by_hash = auditor.get(
                f"/v1/log/proof/inclusion?hash={record['leafHash']}&size={size}"
            ).json()
            assert by_hash == proof
            # The path proves nothing for a neighbour, nor against another signed root.
            with pytest.raises(InvalidProofError):
                verify_inclusion(leaf_hash, (index + 1) % size, size, path, root)
    assert {"configuration.loaded", "exchange.accepted", "exchange.rejected"} <= events


def test_a_leaf_is_proven_in_an_earlier_signed_tree(log_hub: LogHub) -> None:
    first = log_hub.first
    root = _checked(first, log_hub.running.pki)
    index = first["treeSize"] - 1
    with log_hub.auditor() as auditor:
        record = auditor.get(f"/v1/log/records/{index}").json()
        proof = auditor.get(
            f"/v1/log/proof/inclusion?index={index}&size={first['treeSize']}"
        ).json()
    leaf_hash = evidence.leaf_hash(base64.b64decode(record["leaf"]))
    path = [bytes.fromhex(h) for h in proof["inclusionPath"]]
    verify_inclusion(leaf_hash, index, first["treeSize"], path, root)


def test_the_later_checkpoint_is_proven_consistent_with_the_earlier(log_hub: LogHub) -> None:
    pki = log_hub.running.pki
    first = log_hub.first
    with log_hub.auditor() as auditor:
        latest = auditor.get("/v1/log/checkpoint").json()
        m, n = first["treeSize"], latest["treeSize"]
        proof = auditor.get(f"/v1/log/proof/consistency?first={m}").json()
        assert (proof["first"], proof["second"]) == (m, n)
        path = [bytes.fromhex(h) for h in proof["consistencyPath"]]
        verify_consistency(m, n, _checked(first, pki), _checked(latest, pki), path)
        # Every earlier size is consistent with the latest signed root too, against roots the
        # auditor recomputes from the records it fetched.
        hashes = [
            bytes.fromhex(auditor.get(f"/v1/log/records/{i}").json()["leafHash"]) for i in range(n)
        ]
        for size in range(1, n + 1):
            step = auditor.get(f"/v1/log/proof/consistency?first={size}&second={n}").json()
            verify_consistency(
                size,
                n,
                evidence.merkle_root(hashes[:size]),
                _checked(latest, pki),
                [bytes.fromhex(h) for h in step["consistencyPath"]],
            )
    assert step["consistencyPath"] == []  # size == n: nothing to prove


def test_a_rewritten_store_cannot_prove_itself_consistent(log_hub: LogHub, tmp_path: Path) -> None:
    """A copy of the store with one old record rewritten (and its hash, and its index's
    signature left as they were): its proofs fail against the checkpoint signed before."""
    first = log_hub.first
    old_root = _checked(first, log_hub.running.pki)
    copy = tmp_path / "rewritten.sqlite"
    source = sqlite3.connect(log_hub.running.hub.store.path)  # type: ignore[attr-defined]
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    forged = evidence.canonical_json({"v": 1, "event": "exchange.accepted", "time": "forged"})
    target.execute(
        "UPDATE evidence SET record = ?, leaf_hash = ? WHERE leaf_index = 1",
        (forged, evidence.leaf_hash(forged)),
    )
    target.commit()
    target.close()
    store = SqliteStore(copy)
    try:
        tree = LogTree(store)
        n = store.leaf_count()
        m = first["treeSize"]
        new_root, path = tree.use(n, lambda t: (t.root(n), t.consistency_proof(m, n)))
        with pytest.raises(InvalidProofError):
            verify_consistency(m, n, old_root, new_root, path)
        inclusion = tree.use(n, lambda t: t.inclusion_proof(1, m))
        with pytest.raises(InvalidProofError):
            verify_inclusion(evidence.leaf_hash(forged), 1, m, inclusion, old_root)
    finally:
        store.close()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("who", ["party", "operator"])
def test_parties_and_operators_are_refused(log_hub: LogHub, route: str, who: str) -> None:
    client = log_hub.client(party="be-platform") if who == "party" else log_hub.client("operator")
    with client:
        body = _problem(client.get(route), 403, "authz.role-required")
    assert "auditor" in body["detail"]
    assert "rootHash" not in body and "inclusionPath" not in body


def test_without_a_certificate_there_is_no_way_in(log_hub: LogHub) -> None:
    import ssl

    context = ssl.create_default_context(cafile=str(log_hub.running.pki.ca_cert))
    with httpx.Client(base_url=log_hub.running.url, verify=context) as client:
        for route in ROUTES:
            with pytest.raises(httpx.TransportError):
                client.get(route)

    # Behind a proxy that ended TLS without passing the certificate on: 401, never the log.
    async def plain(route: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(log_hub.running.hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            return await client.get(route)

    for route in ROUTES:
        _problem(asyncio.run(plain(route)), 401, "auth.unauthenticated")


BAD = [
    # (route, status, code, parameter)
    ("/v1/log/proof/inclusion", 400, "log.invalid-parameter", "index"),
    ("/v1/log/proof/inclusion?index=abc", 400, "log.invalid-parameter", "index"),
    ("/v1/log/proof/inclusion?index=-1", 400, "log.invalid-parameter", "index"),
    ("/v1/log/proof/inclusion?index=1e3", 400, "log.invalid-parameter", "index"),
    ("/v1/log/proof/inclusion?index=" + "9" * 19, 400, "log.invalid-parameter", "index"),
    ("/v1/log/proof/inclusion?index=0&hash=" + "0" * 64, 400, "log.invalid-parameter", "hash"),
    ("/v1/log/proof/inclusion?hash=zz", 400, "log.invalid-parameter", "hash"),
    ("/v1/log/proof/inclusion?index=0&size=x", 400, "log.invalid-parameter", "size"),
    ("/v1/log/proof/inclusion?index=0&size=0", 422, "log.out-of-range", "size"),
    ("/v1/log/proof/inclusion?index=0&size=999999", 422, "log.out-of-range", "size"),
    ("/v1/log/proof/inclusion?index=3&size=3", 422, "log.out-of-range", "index"),
    ("/v1/log/proof/inclusion?hash=" + "0" * 64, 404, "log.leaf-not-found", None),
    ("/v1/log/proof/consistency", 400, "log.invalid-parameter", "first"),
    ("/v1/log/proof/consistency?first=1.5", 400, "log.invalid-parameter", "first"),
    ("/v1/log/proof/consistency?first=1&second=", 400, "log.invalid-parameter", "second"),
    ("/v1/log/proof/consistency?first=0", 422, "log.out-of-range", "first"),
    ("/v1/log/proof/consistency?first=3&second=2", 422, "log.out-of-range", "first"),
    ("/v1/log/proof/consistency?first=1&second=999999", 422, "log.out-of-range", "second"),
    ("/v1/log/records/abc", 400, "log.invalid-parameter", "index"),
    ("/v1/log/records/-1", 400, "log.invalid-parameter", "index"),
    ("/v1/log/records/999999", 404, "log.leaf-not-found", None),
    ("/v1/log/checkpoint?size=x", 400, "log.invalid-parameter", "size"),
    ("/v1/log/checkpoint?size=2", 404, "log.no-checkpoint", None),
]


@pytest.mark.parametrize(("route", "status", "code", "parameter"), BAD)
def test_bad_parameters_are_named(
    log_hub: LogHub, route: str, status: int, code: str, parameter: str | None
) -> None:
    with log_hub.auditor() as auditor:
        body = _problem(auditor.get(route), status, code)
        assert body.get("parameter") == parameter
        assert body["traceId"]
        # The hub keeps answering the auditor.
        assert auditor.get("/v1/log/checkpoint").status_code == 200


def test_a_timestamped_checkpoint_carries_its_rfc3161_token(
    tmp_path_factory: pytest.TempPathFactory, pki: DevPki
) -> None:
    """With a TSA configured, the auditor gets each checkpoint's token, and openssl verifies it
    over the checkpoint's signed statement."""
    from gateway.testing import wait_until
    from gateway.timestamps import tsa_label
    from tests.tsa import LocalTsa

    with (
        LocalTsa(tmp_path_factory.mktemp("tsa")) as tsa,
        running_hub(
            tmp_path_factory.mktemp("stamped"),
            sandbox=False,
            pki=pki,
            delivery_workers=0,
            tsa_urls=[tsa.url],
        ) as running,
    ):
        _send(running, 2)
        made = running.hub.checkpoint()
        with LogHub(running).auditor() as auditor:

            def stamped() -> dict[str, Any] | None:
                body: dict[str, Any] = auditor.get(
                    f"/v1/log/checkpoint?size={made.tree_size}"
                ).json()
                return body if "timestampToken" in body else None

            assert wait_until(stamped, timeout=60)
            checkpoint = stamped()
        assert checkpoint is not None
        assert checkpoint["timestampAuthority"] == tsa_label(tsa.url)  # scheme, host, port
        statement = evidence.checkpoint_statement(
            checkpoint["treeSize"], checkpoint["rootHash"], checkpoint["time"], checkpoint["keyId"]
        )
        token = base64.b64decode(checkpoint["timestampToken"])
        checked = tsa.verify(statement, token, tmp_path_factory.mktemp("verify"))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "Verification: OK" in checked.stdout
