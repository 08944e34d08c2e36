"""Checkpoints in the background and their RFC 3161 timestamps, against a real local TSA.

The hub runs for real on loopback (mutual TLS, SQLite); the authorities are `openssl ts -reply`
behind HTTP handlers on 127.0.0.1 (tests/tsa.py); tokens are checked with `openssl ts -verify`.
Waits are bounded polls; nothing asserts how long anything took.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import evidence, testing, timestamps
from gateway.certs import DevPki
from gateway.checkpointer import Frontier
from gateway.service.tls import client_ssl_context
from gateway.store.sqlite import read_log
from gateway.testing import RunningHub, capture_logs, free_port, running_hub
from tests.conftest import post_applications
from tests.tsa import LocalTsa

QUIET = {"sandbox": False, "delivery_workers": 0}
FAST_RETRY = {"tsa_backoff_s": 0.1, "tsa_backoff_cap_s": 0.4, "tsa_timeout_s": 5.0}


@pytest.fixture(scope="module")
def tsa_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalTsa, LocalTsa]]:
    with (
        LocalTsa(tmp_path_factory.mktemp("tsa-a")) as first,
        LocalTsa(tmp_path_factory.mktemp("tsa-b")) as second,
    ):
        yield first, second


@pytest.fixture
def tsas(tsa_pair: tuple[LocalTsa, LocalTsa]) -> Iterator[tuple[LocalTsa, LocalTsa]]:
    """Both authorities up and answering, before and after each test."""
    for tsa in tsa_pair:
        tsa.up()
        tsa.mode = "ok"
    yield tsa_pair
    for tsa in tsa_pair:
        tsa.up()
        tsa.mode = "ok"


def wait_until(condition: Callable[[], object], timeout: float = 60.0) -> bool:
    """Bounded polling, with room for a loaded machine."""
    return testing.wait_until(condition, timeout)


def send(hub: RunningHub, count: int = 1) -> list[str]:
    """Accepted applications (each a 202); their national numbers, to look for in logs."""
    return [
        body["application"]["applicant"]["nationalRegisterNumber"]
        for body in post_applications(hub, count)
    ]


def statement_of(checkpoint: dict[str, Any]) -> bytes:
    return evidence.checkpoint_statement(
        checkpoint["tree_size"], checkpoint["root_hash"], checkpoint["time"], checkpoint["key_id"]
    )


def assert_checkpoint_holds(hub: RunningHub, checkpoint: dict[str, Any]) -> None:
    """Its root is the root of the first tree_size leaves, its signature the hub's."""
    leaves = hub.hub.store.leaves(0, checkpoint["tree_size"])
    assert len(leaves) == checkpoint["tree_size"]
    assert checkpoint["root_hash"] == evidence.merkle_root([x.leaf_hash for x in leaves]).hex()
    public_key = hub.hub.signer.certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    public_key.verify(
        base64.b64decode(checkpoint["signature"]),
        statement_of(checkpoint),
        ec.ECDSA(hashes.SHA256()),
    )


def metrics_text(hub: RunningHub) -> str:
    operator = httpx.Client(
        base_url=hub.url, verify=client_ssl_context(hub.pki.role("operator")), timeout=10
    )
    with operator:
        response = operator.get("/metrics")
    assert response.status_code == 200
    return response.text


def stamped(hub: RunningHub) -> list[dict[str, Any]]:
    return [row for row in hub.hub.store.timestamps() if row["token"] is not None]


def waiting(hub: RunningHub) -> int:
    return hub.hub.store.timestamp_queue()[0]


# -- the tree head ------------------------------------------------------------------------------
def test_frontier_root_is_the_rfc6962_root_at_every_size() -> None:
    frontier = Frontier()
    hashes_ = [evidence.leaf_hash(str(i).encode()) for i in range(70)]
    assert frontier.root() == evidence.merkle_root([])
    for size, leaf in enumerate(hashes_, start=1):
        frontier.append(leaf)
        assert frontier.root() == evidence.merkle_root(hashes_[:size]), size
    assert frontier.root() != evidence.merkle_root(hashes_[:69])


def test_checkpoints_by_count(tmp_path: Path, pki: DevPki) -> None:
    settings = {"checkpoint_interval_s": 0, "checkpoint_every_records": 4}
    with running_hub(tmp_path, pki=pki, **QUIET, **settings) as hub:
        checkpointer = hub.hub.checkpointing.checkpointer
        for _ in range(2):
            send(hub, 4)  # one record each
            size = len(hub.hub.store.leaves())
            # Covered up to fewer than 4 records (where the count fell depends on when the
            # checkpointer looked, which a loaded machine decides).
            assert wait_until(lambda size=size: 0 <= size - checkpointer.last_size < 4, 60)
        checkpoints = hub.hub.store.checkpoints()
        assert len(checkpoints) >= 2
        sizes = [c["tree_size"] for c in checkpoints]
        # No timer: every checkpoint covers at least 4 records more than the one before.
        assert all(b - a >= 4 for a, b in zip([0, *sizes], sizes, strict=False))
        for checkpoint in checkpoints:
            assert_checkpoint_holds(hub, checkpoint)
        # Between 1 and 3 records not covered: none is due.
        if len(hub.hub.store.leaves()) - checkpointer.last_size < 3:
            send(hub, 1)
        assert 1 <= len(hub.hub.store.leaves()) - checkpointer.last_size < 4
        assert checkpointer.run_once() is None
        assert hub.hub.store.checkpoints() == checkpoints
        assert "guichet_checkpoints_total" in metrics_text(hub)
        assert hub.hub.store.timestamps() == []  # no authority configured: nothing queued
    # Closing: the records not yet covered get a last checkpoint.
    leaves, closing = read_log(tmp_path / "guichet.db")
    assert closing[-1]["tree_size"] == len(leaves) > sizes[-1]


def test_checkpoints_by_interval(tmp_path: Path, pki: DevPki) -> None:
    settings = {"checkpoint_interval_s": 0.2, "checkpoint_every_records": 0}
    with running_hub(tmp_path, pki=pki, **QUIET, **settings) as hub:
        send(hub)
        first = len(hub.hub.store.leaves())
        assert wait_until(lambda: any(c["tree_size"] >= first for c in hub.hub.store.checkpoints()))
        send(hub)
        second = len(hub.hub.store.leaves())
        assert second > first
        assert wait_until(
            lambda: any(c["tree_size"] >= second for c in hub.hub.store.checkpoints())
        )
        for checkpoint in hub.hub.store.checkpoints():
            assert_checkpoint_holds(hub, checkpoint)
        # The tree did not grow: no new checkpoint of the same size (one per tree size, kept).
        count = len(hub.hub.store.checkpoints())
        assert hub.hub.checkpointing.checkpointer.run_once() is None
        assert len(hub.hub.store.checkpoints()) == count


def test_no_checkpointer_when_both_triggers_are_off(tmp_path: Path, pki: DevPki) -> None:
    settings = {"checkpoint_interval_s": 0, "checkpoint_every_records": 0}
    with running_hub(tmp_path, pki=pki, **QUIET, **settings) as hub:
        send(hub, 2)
        assert not hub.hub.checkpointing.checkpointer.enabled
        assert hub.hub.store.checkpoints() == []


# -- the request ----------------------------------------------------------------------------------
def test_request_hashes_exactly_the_signed_statement(tmp_path: Path) -> None:
    statement = evidence.checkpoint_statement(7, "ab" * 32, "2026-01-01T00:00:00.000000Z", "cd")
    query, nonce = timestamps.build_request(statement)
    (tmp_path / "q.tsq").write_bytes(query)
    (tmp_path / "statement").write_bytes(statement)
    shown = subprocess.run(
        ["openssl", "ts", "-query", "-in", str(tmp_path / "q.tsq"), "-text"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert "Hash Algorithm: sha256" in shown
    assert "Certificate required: yes" in shown
    shown_nonce = next(line for line in shown.splitlines() if line.startswith("Nonce: "))
    assert int(shown_nonce.split()[-1], 16) == nonce
    # openssl's own query over the statement file carries the same imprint.
    ours = subprocess.run(
        ["openssl", "ts", "-query", "-data", str(tmp_path / "statement"), "-sha256", "-no_nonce",
         "-text"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    data_block = shown.split("Message data:")[1].split("Policy OID")[0]
    assert data_block == ours.split("Message data:")[1].split("Policy OID")[0]
    assert timestamps.imprint(statement) == hashlib.sha256(statement).digest()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("bad-imprint", "bad-token"), ("bad-nonce", "bad-token"), ("rejection", "refused")],
)
def test_a_token_that_does_not_answer_the_request_is_refused(
    tsas: tuple[LocalTsa, LocalTsa], mode: str, reason: str
) -> None:
    tsa = tsas[0]
    statement = evidence.checkpoint_statement(1, "00" * 32, "2026-01-01T00:00:00Z", "k")
    query, nonce = timestamps.build_request(statement)
    tsa.mode = mode
    reply = httpx.post(tsa.url, content=query, headers={"Content-Type": timestamps.QUERY_TYPE})
    with pytest.raises(timestamps.TimestampError) as caught:
        timestamps.check_response(reply.content, statement, nonce)
    assert caught.value.reason == reason
    with pytest.raises(timestamps.TimestampError) as garbage:
        timestamps.check_response(b"\x30\x03\x02\x01", statement, nonce)
    assert garbage.value.reason == "malformed"


# -- tokens ---------------------------------------------------------------------------------
def test_each_checkpoint_gets_a_token_that_openssl_verifies(
    tmp_path: Path, pki: DevPki, tsas: tuple[LocalTsa, LocalTsa]
) -> None:
    first, _ = tsas
    settings = {"checkpoint_interval_s": 0, "checkpoint_every_records": 2, "tsa_urls": (first.url,)}
    with running_hub(tmp_path / "hub", pki=pki, **QUIET, **settings, **FAST_RETRY) as hub:
        checkpointer = hub.hub.checkpointing.checkpointer
        for _ in range(2):
            before = checkpointer.last_size
            send(hub, 2)  # two new leaves: at least one checkpoint, whenever they commit
            assert wait_until(lambda before=before: checkpointer.last_size > before)
        assert wait_until(lambda: waiting(hub) == 0 and len(stamped(hub)) >= 2)
        checkpoints = {c["tree_size"]: c for c in hub.hub.store.checkpoints()}
        for row in stamped(hub):
            checkpoint = checkpoints[row["tree_size"]]
            assert row["tsa_url"] == first.url
            statement = statement_of(checkpoint)
            info = timestamps.token_info(row["token"])
            assert info["hashedMessage"] == hashlib.sha256(statement).hexdigest()
            assert info["genTime"] == row["gen_time"]
            result = first.verify(statement, row["token"], tmp_path)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "Verification: OK" in result.stdout
            # The token is bound to those bytes: one changed byte and openssl says no.
            altered = statement.replace(b'"treeSize":', b'"treeSize":1')
            assert first.verify(altered, row["token"], tmp_path).returncode != 0
        assert 'guichet_timestamp_requests_total{outcome="granted"' in metrics_text(hub)


def test_with_the_first_authority_down_the_second_gives_the_token(
    tmp_path: Path, pki: DevPki, tsas: tuple[LocalTsa, LocalTsa]
) -> None:
    _, second = tsas
    refused = f"http://127.0.0.1:{free_port()}/tsa"  # nothing listens there
    settings = {
        "checkpoint_interval_s": 0,
        "checkpoint_every_records": 1,
        "tsa_urls": (refused, second.url),
    }
    with running_hub(tmp_path / "hub", pki=pki, **QUIET, **settings, **FAST_RETRY) as hub:
        send(hub)
        assert wait_until(lambda: len(stamped(hub)) >= 1 and waiting(hub) == 0)
        assert {row["tsa_url"] for row in stamped(hub)} == {second.url}
        text = metrics_text(hub)
        label = timestamps.tsa_label(refused)
        assert f'guichet_timestamp_requests_total{{outcome="unavailable",tsa="{label}"}}' in text
        assert "guichet_timestamp_outage 0.0" in text
        row = stamped(hub)[0]
        checkpoint = next(
            c for c in hub.hub.store.checkpoints() if c["tree_size"] == row["tree_size"]
        )
        assert second.verify(statement_of(checkpoint), row["token"], tmp_path).returncode == 0


def test_outage_never_stops_the_exchange_and_the_queue_drains_after(
    tmp_path: Path, pki: DevPki, tsas: tuple[LocalTsa, LocalTsa]
) -> None:
    first, second = tsas
    first.down()  # connection refused
    second.mode = "unavailable"  # HTTP 503
    settings = {
        "checkpoint_interval_s": 0,
        "checkpoint_every_records": 1,
        "tsa_urls": (first.url, second.url),
    }
    with (
        capture_logs() as logs,
        running_hub(tmp_path / "hub", pki=pki, **QUIET, **settings, **FAST_RETRY) as hub,
    ):
        numbers = send(hub, 2)
        assert wait_until(lambda: waiting(hub) >= 2)
        numbers += send(hub, 2)  # still 202s
        assert wait_until(lambda: waiting(hub) >= 3)
        assert stamped(hub) == []
        assert wait_until(lambda: any(e["event"] == "timestamp.outage" for e in logs.events()))
        text = metrics_text(hub)
        assert "guichet_timestamp_outage 1.0" in text
        depth = next(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("guichet_timestamp_queue_depth ")
        )
        assert depth >= 3
        alert = next(e for e in logs.events() if e["event"] == "timestamp.outage")
        assert alert["alert"] is True
        assert alert["level"] == "error"
        assert alert["waiting"] >= 1
        assert any("HTTP 503" in failure for failure in alert["failures"])
        for number in numbers:  # no personal data in any line of the outage
            assert number not in logs.text

        second.mode = "ok"  # one authority is back
        assert wait_until(lambda: waiting(hub) == 0 and len(stamped(hub)) >= 3)
        assert wait_until(lambda: "guichet_timestamp_outage 0.0" in metrics_text(hub))
        assert any(e["event"] == "timestamp.recovered" for e in logs.events())
        assert {row["tsa_url"] for row in stamped(hub)} == {second.url}
        checkpoints = {c["tree_size"]: c for c in hub.hub.store.checkpoints()}
        for row in stamped(hub):
            assert row["attempts"] >= 1
            verified = second.verify(
                statement_of(checkpoints[row["tree_size"]]), row["token"], tmp_path
            )
            assert verified.returncode == 0, verified.stderr


def test_the_queue_survives_a_restart(
    tmp_path: Path, pki: DevPki, tsas: tuple[LocalTsa, LocalTsa]
) -> None:
    first, _ = tsas
    first.mode = "unavailable"
    settings = {
        "checkpoint_interval_s": 0,
        "checkpoint_every_records": 1,
        "tsa_urls": (first.url,),
        "tsa_backoff_s": 60.0,  # after the first failed probe, none for a minute
    }
    data_dir = tmp_path / "hub"
    with running_hub(data_dir, pki=pki, **QUIET, **settings) as hub:
        send(hub, 2)
        assert wait_until(
            lambda: waiting(hub) >= 2 and any(row["attempts"] for row in hub.hub.store.timestamps())
        )
    # The hub is down; its queue is in the store. The authority comes back meanwhile.
    with sqlite3.connect(data_dir / "guichet.db") as conn:
        queued = [
            size
            for (size,) in conn.execute(
                "SELECT tree_size FROM checkpoint_timestamps WHERE token IS NULL"
            )
        ]
    conn.close()
    assert len(queued) >= 2
    first.mode = "ok"
    with running_hub(data_dir, pki=pki, **QUIET, **settings) as hub:
        # The backoff of the last run does not hold: what waited is tried at start.
        assert wait_until(lambda: waiting(hub) == 0)
        tokens = {row["tree_size"]: row["token"] for row in stamped(hub)}
        assert set(queued) <= set(tokens)
        checkpoints = {c["tree_size"]: c for c in hub.hub.store.checkpoints()}
        for size in queued:
            verified = first.verify(statement_of(checkpoints[size]), tokens[size], tmp_path)
            assert verified.returncode == 0, verified.stderr


def test_checkpoints_made_elsewhere_join_the_queue(
    tmp_path: Path, pki: DevPki, tsas: tuple[LocalTsa, LocalTsa]
) -> None:
    first, _ = tsas
    settings = {"checkpoint_interval_s": 0, "checkpoint_every_records": 0, "tsa_urls": (first.url,)}
    with running_hub(tmp_path / "hub", pki=pki, **QUIET, **settings, **FAST_RETRY) as hub:
        send(hub)
        made = hub.hub.checkpoint()  # on demand, not by the background checkpointer
        assert wait_until(lambda: [row["tree_size"] for row in stamped(hub)] == [made.tree_size])
        statement = evidence.checkpoint_statement(
            made.tree_size, made.root_hash, made.time, made.key_id
        )
        assert first.verify(statement, stamped(hub)[0]["token"], tmp_path).returncode == 0


def test_an_authority_is_named_without_its_credentials_or_path() -> None:
    from gateway.timestamps import tsa_label

    assert tsa_label("https://user:secret@tsa.example:8443/tsr?key=k") == "https://tsa.example:8443"
    assert tsa_label("http://[::1]:99/x") == "http://[::1]:99"
    assert tsa_label("http://tsa.example/") == "http://tsa.example"
