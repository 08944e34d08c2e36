"""`guichet audit replay` on a real hub's data: pinned versions, tampering, redelivery.

One case of the procedure runs across the sandbox back offices (REST and SOAP, in and out); the
command then runs as an operator runs it, in its own process, on that data dir (live) or on a
copy of it that a test tampers with.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway import evidence
from gateway.audit import verify_log
from gateway.certs import DevPki
from gateway.demo import CASE_TYPES
from gateway.mapping import MappingSet
from gateway.pipeline import AuthorisedMessage, InboundMessage, _map_out, to_canonical, validate
from gateway.signatures import SignatureVerifier
from gateway.store import MessageRow
from gateway.testing import RunningHub, running_hub, wait_until
from tests.conftest import EXAMPLES, HOME, guichet

pytestmark = pytest.mark.slow

WSE_MAPPING = "mappings/be-vlg-wse/from-canonical/application.submitted.toml"


@dataclass
class Case:
    live: RunningHub
    home: Path
    data: Path
    messages: list[MessageRow]

    def record(self, leaf_index: int) -> dict[str, Any]:
        return dict(json.loads(self.live.hub.store.leaves(leaf_index, leaf_index + 1)[0].record))

    def of_type(self, message_type: str) -> MessageRow:
        return next(m for m in self.messages if m.type == message_type)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> Iterator[Case]:
    """A hub whose home (schemas, mappings, parties) is a copy the tests may change on disk,
    after one whole case went through it."""
    home = tmp_path_factory.mktemp("home")
    for name in ("schemas", "mappings", "examples"):
        shutil.copytree(HOME / name, home / name)
    shutil.copy2(HOME / "parties.toml", home / "parties.toml")
    data = tmp_path_factory.mktemp("data")
    shutil.copytree(pki.directory, data / "pki")
    with running_hub(data, pki=DevPki.at(data / "pki"), home=home, delivery_backoff_s=0.05) as live:
        body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
        subject = f"SP-REPLAY-{uuid.uuid4().hex[:8]}"
        body["header"].update(messageId=str(uuid.uuid4()), caseReference=subject)
        with live.client("be-platform") as client:
            assert client.post("/v1/messages", json=body).status_code == 202
        store = live.hub.store

        def done() -> bool:
            rows = store.messages_for_subject(subject)
            return sorted(r.type for r in rows) == sorted(CASE_TYPES) and all(
                d.state == "delivered" for r in rows for d in store.deliveries(r.id)
            )

        assert wait_until(done)
        yield Case(live, home, data, store.messages_for_subject(subject))


def guichet_replay(case: Case, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return guichet(
        "audit",
        "replay",
        "--data-dir",
        data,
        *args,
        env={"GUICHET_HOME": str(case.home)},
        timeout=300,
    )


def lines_of(result: subprocess.CompletedProcess[str]) -> dict[int, str]:
    """Report line of each replayed leaf, by leaf index."""
    return {
        int(m.group(1)): line
        for line in result.stdout.splitlines()
        if (m := re.match(r"leaf (\d+) \S+ from \S+ message", line)) and "redelivery" not in line
    }


def copy_of(case: Case, target: Path) -> Path:
    """A copy of the data dir, the store copied with SQLite's online backup (the hub runs)."""
    target.mkdir()
    shutil.copytree(case.data / "pki", target / "pki")
    shutil.copy2(case.data / "person-ref.key", target / "person-ref.key")
    with (
        contextlib.closing(sqlite3.connect(case.data / "guichet.db")) as source,
        contextlib.closing(sqlite3.connect(target / "guichet.db")) as copy,
    ):
        source.backup(copy)
    return target


def tamper(data: Path, sql: str, *params: object) -> None:
    with contextlib.closing(sqlite3.connect(data / "guichet.db")) as conn, conn:
        assert conn.execute(sql, params).rowcount == 1


def test_replay_of_real_exchanges_reports_no_mismatch(case: Case) -> None:
    result = guichet_replay(case, case.data)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = lines_of(result)
    assert {m.leaf_index for m in case.messages} <= set(lines)
    assert all(line.endswith(": ok") for line in lines.values()), result.stdout
    assert f"{len(lines)} ok, 0 mismatch, 0 not replayable" in result.stdout
    # SOAP both ways was replayed: a SOAP 1.1 message in, SOAP messages out.
    residence = case.record(case.of_type("residence.decided").leaf_index)
    assert residence["sender"] == "be-fed-ibz"
    assert residence["inbound"]["transport"] == "soap11"
    assert any(
        o["receiver"] == "be-fed-ibz"
        for m in case.messages
        for o in case.record(m.leaf_index)["outbound"]
    )


def test_a_range_by_index_and_by_time(case: Case) -> None:
    first, second = sorted(m.leaf_index for m in case.messages)[:2]
    by_index = guichet_replay(case, case.data, "--from", str(first), "--to", str(first))
    assert by_index.returncode == 0
    assert set(lines_of(by_index)) == {first}
    since = case.record(second)["time"]
    by_time = guichet_replay(case, case.data, "--from", since)
    assert by_time.returncode == 0
    assert min(lines_of(by_time)) == second
    bad = guichet_replay(case, case.data, "--from", "yesterday")
    assert bad.returncode == 1
    assert "neither a leaf index nor a time" in bad.stderr


def test_replay_runs_the_pinned_versions_not_the_files_on_disk(case: Case) -> None:
    application = case.of_type("application.submitted")
    record = case.record(application.leaf_index)
    mapping = case.home / WSE_MAPPING
    original = mapping.read_bytes()
    swapped = original.replace(
        b'to = "aanvraag/werknemer/naam"\nfrom = "c:applicationSubmitted/c:worker/c:familyName"',
        b'to = "aanvraag/werknemer/naam"\nfrom = "c:applicationSubmitted/c:worker/c:givenNames"',
    )
    assert swapped != original
    mapping.write_bytes(swapped)
    try:
        # Today's files give another message to Flanders than the one sealed ...
        current = MappingSet.load(case.home)
        body = case.live.hub.store.payload(record["inbound"]["sha256"])
        assert body is not None
        inbound = InboundMessage(
            record["sender"],
            body,
            record["inbound"]["contentType"],
            record["inbound"]["transport"],
            record["traceId"],
            record["time"],
            record["senderSignature"]["value"],
        )
        moment = evidence.parse_moment(record["time"])
        verifier = SignatureVerifier.as_of(case.live.hub.parties, moment, required=True)
        validated = validate(inbound, current, case.live.hub.limits, verifier)
        canonical = to_canonical(AuthorisedMessage(validated), current)
        today = _map_out(canonical, "be-vlg-wse", current, case.live.hub.parties)
        sealed = next(o for o in record["outbound"] if o["receiver"] == "be-vlg-wse")
        assert evidence.digest(today.body) != sealed["sha256"]
        # ... and replay still finds every digest of the day.
        result = guichet_replay(case, case.data)
        assert result.returncode == 0, result.stdout + result.stderr
        assert lines_of(result)[application.leaf_index].endswith(": ok")
        assert "0 mismatch" in result.stdout
    finally:
        mapping.write_bytes(original)


def test_a_tampered_payload_is_a_mismatch(case: Case, tmp_path: Path) -> None:
    data = copy_of(case, tmp_path / "copy")
    application = case.of_type("application.submitted")
    inbound = case.record(application.leaf_index)["inbound"]["sha256"]
    other = case.record(case.of_type("admissibility.decided").leaf_index)["inbound"]["sha256"]
    tamper(
        data,
        "UPDATE payloads SET content = (SELECT content FROM payloads WHERE sha256 = ?)"
        " WHERE sha256 = ?",
        other,
        inbound,
    )
    result = guichet_replay(case, data)
    assert result.returncode == 1
    lines = lines_of(result)
    # Another body's ciphertext under this digest: AES-GCM authenticates the digest with it.
    assert lines[application.leaf_index].endswith(
        "mismatch: payload: the store cannot read it (payload.corrupt)"
    ), lines[application.leaf_index]
    assert sum(line.endswith(": ok") for line in lines.values()) == len(lines) - 1
    assert "1 mismatch" in result.stdout


def test_a_purged_payload_is_not_replayable(case: Case, tmp_path: Path) -> None:
    data = copy_of(case, tmp_path / "copy")
    application = case.of_type("application.submitted")
    inbound = case.record(application.leaf_index)["inbound"]["sha256"]
    tamper(data, "DELETE FROM payloads WHERE sha256 = ?", inbound)
    result = guichet_replay(case, data)
    assert result.returncode == 0  # said clearly, not a mismatch
    assert lines_of(result)[application.leaf_index].endswith(
        f"not replayable: payload {inbound} is no longer in the store (purged)"
    )
    assert "1 not replayable" in result.stdout


def _artefact_sha(case: Case, leaf_index: int, path: str) -> str:
    """The digest the configuration in force at ``leaf_index`` gives ``path``."""
    records = [json.loads(leaf.record) for leaf in case.live.hub.store.leaves(0, leaf_index)]
    loaded = [r for r in records if r["event"] == "configuration.loaded"][-1]
    return str(loaded["files"][path])


def test_a_tampered_artefact_is_a_mismatch(case: Case, tmp_path: Path) -> None:
    data = copy_of(case, tmp_path / "copy")
    leaf = case.of_type("application.submitted").leaf_index
    sha = _artefact_sha(case, leaf, WSE_MAPPING)
    tamper(
        data, "UPDATE artefacts SET content = CAST(content || X'0a' AS BLOB) WHERE sha256 = ?", sha
    )
    result = guichet_replay(case, data)
    assert result.returncode == 1
    line = lines_of(result)[leaf]
    assert f"mismatch at artefact {WSE_MAPPING}: recorded {sha}, replayed " in line, line
    assert ": ok" not in result.stdout  # every message of that configuration is named


def test_a_missing_artefact_makes_messages_not_replayable(case: Case, tmp_path: Path) -> None:
    data = copy_of(case, tmp_path / "copy")
    leaf = case.of_type("application.submitted").leaf_index
    tamper(data, "DELETE FROM artefacts WHERE sha256 = ?", _artefact_sha(case, leaf, WSE_MAPPING))
    result = guichet_replay(case, data)
    assert result.returncode == 0
    assert f"artefact missing: {WSE_MAPPING}" in lines_of(result)[leaf]


def _point_at_sandbox(case: Case) -> bytes:
    """Write the sandbox's addresses into the home's parties.toml; the old text is returned."""
    path = case.home / "parties.toml"
    original = path.read_bytes()
    text = original.decode()
    for party, url in case.live.sandbox.endpoints.items():
        start = text.index(f"[parties.{party}]")
        at = text.index("endpoint = ", start)
        end = text.index("\n", at)
        text = f'{text[:at]}endpoint = "{url}"{text[end:]}'
    path.write_text(text)
    return original


@pytest.mark.parametrize(
    ("message_type", "receiver"),
    [("application.submitted", "be-vlg-wse"), ("admissibility.decided", "be-fed-ibz")],
)
def test_redelivery_is_a_duplicate_for_the_back_office_and_linked_in_the_log(
    case: Case, message_type: str, receiver: str
) -> None:
    message = case.of_type(message_type)
    office = case.live.sandbox.offices[receiver]
    before = office.duplicates
    store = case.live.hub.store
    size = len(store.leaves())
    original = _point_at_sandbox(case)
    try:
        index = str(message.leaf_index)
        result = guichet_replay(
            case, case.data, "--from", index, "--to", index, "--redeliver", receiver
        )
    finally:
        (case.home / "parties.toml").write_bytes(original)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"redelivery to {receiver}: delivered" in result.stdout
    # The back office saw the same message id again, with the same body: a duplicate.
    assert office.duplicates == before + 1
    again = [r for r in office.received if r.message_id == message.id]
    assert [r.duplicate for r in again] == [False, True]
    # Two new records, the replay then its outcome, linked to the original leaf and id.
    new = [json.loads(leaf.record) for leaf in store.leaves(size)]
    replayed = next(r for r in new if r["event"] == "exchange.replayed")
    outcome = next(r for r in new if r["event"] == "delivery.redelivered")
    original_leaf = store.leaves(message.leaf_index, message.leaf_index + 1)[0]
    link = {
        "leafIndex": message.leaf_index,
        "leafHash": original_leaf.leaf_hash.hex(),
        "messageId": message.id,
    }
    assert replayed["replayOf"] == link
    assert replayed["receiver"] == receiver
    assert outcome["replayOf"] == link
    assert outcome["outcome"] == "delivered"
    replay_leaf = next(
        leaf.leaf_index for leaf in store.leaves(size) if b'"exchange.replayed"' in leaf.record
    )
    assert outcome["replayLeafIndex"] == replay_leaf
    # The log, with the new records, still verifies.
    report = verify_log(store.leaves(), store.checkpoints(), case.live.hub.signer.certificate)
    assert report.ok, report.problems


def test_redelivery_to_a_party_that_did_not_receive_it_sends_nothing(case: Case) -> None:
    message = case.of_type("application.submitted")
    index = str(message.leaf_index)
    size = len(case.live.hub.store.leaves())
    result = guichet_replay(
        case, case.data, "--from", index, "--to", index, "--redeliver", "be-wal-spw"
    )
    assert result.returncode == 0
    assert "redelivery" not in result.stdout
    assert len(case.live.hub.store.leaves()) == size


def test_a_redelivery_that_fails_is_sealed_and_exits_non_zero(case: Case) -> None:
    message = case.of_type("application.submitted")
    with socket.socket() as probe:  # a loopback port where nothing listens
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    path = case.home / "parties.toml"
    original = path.read_bytes()
    path.write_bytes(
        original.replace(b"https://127.0.0.1:8442", f"https://127.0.0.1:{closed}".encode())
    )
    store = case.live.hub.store
    size = len(store.leaves())
    try:
        index = str(message.leaf_index)
        result = guichet_replay(
            case, case.data, "--from", index, "--to", index, "--redeliver", "be-vlg-wse"
        )
    finally:
        path.write_bytes(original)
    assert result.returncode == 1
    assert "redelivery to be-vlg-wse: failed" in result.stdout
    assert "0 mismatch" in result.stdout  # the replay itself matched
    outcome = [json.loads(leaf.record) for leaf in store.leaves(size)][-1]
    assert outcome["event"] == "delivery.redelivered"
    assert (outcome["outcome"], outcome["replayOf"]["messageId"]) == ("failed", message.id)


def test_after_a_purge_replay_says_which_records_can_no_longer_be_replayed(
    case: Case, tmp_path: Path
) -> None:
    data = copy_of(case, tmp_path / "copy")
    env = {**os.environ, "PYTHONPATH": str(HOME), "GUICHET_HOME": str(case.home)}
    cutoff = (datetime.now(UTC) + timedelta(seconds=1)).isoformat(timespec="seconds")
    time.sleep(1.1)  # the purge refuses a date in the future
    purged = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "purge", "--before", cutoff,
         "--data-dir", str(data)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert purged.returncode == 0, purged.stdout + purged.stderr
    result = guichet_replay(case, data)
    assert result.returncode == 0, result.stdout  # said clearly, not a mismatch
    lines = lines_of(result)
    application = case.of_type("application.submitted")
    assert "not replayable: payload" in lines[application.leaf_index]
    assert "was purged (evidence leaf" in lines[application.leaf_index]
    assert f"0 ok, 0 mismatch, {len(lines)} not replayable" in result.stdout
