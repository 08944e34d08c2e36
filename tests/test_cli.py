"""The `guichet` command as an operator or integrator runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.certs import DevPki
from gateway.config import load_parties
from gateway.service.tls import client_ssl_context
from gateway.signatures import SigningAuth
from gateway.signing import SigningKey
from gateway.store import open_store
from gateway.testing import running_hub, wait_until
from tests.conftest import HOME, guichet, post_applications


def test_certs_init_writes_a_pki_and_refuses_to_overwrite_it(tmp_path: Path) -> None:
    first = guichet("certs", "init", "--dir", str(tmp_path / "pki"))
    assert first.returncode == 0, first.stderr
    for name in (
        "ca.pem",
        "hub.pem",
        "hub-signing.pem",
        "be-platform.pem",
        "be-fed-ibz.pem",
        "be-vlg-wse.pem",
        "role-operator.pem",
        "role-auditor.pem",
    ):
        assert (tmp_path / "pki" / name).is_file(), name
    assert oct((tmp_path / "pki" / "be-platform.key").stat().st_mode & 0o777) == "0o600"
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "pki/ca.pem"),
            str(tmp_path / "pki/be-vlg-wse.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    again = guichet("certs", "init", "--dir", str(tmp_path / "pki"))
    assert again.returncode != 0
    assert "exists" in again.stderr.lower()


def test_mappings_check_passes_and_shows_full_coverage() -> None:
    """Every mapping checks, and the coverage table gives each party exactly what parties.toml
    says it sends (S) and receives (R), for all 23 types of the catalogue."""
    result = guichet("mappings", "check")
    assert result.returncode == 0, result.stderr
    mapping_files = [
        p for p in (HOME / "mappings").glob("*/*-canonical/*.toml") if not p.name.startswith("_")
    ]
    assert result.stdout.count("\nok ") + result.stdout.startswith("ok ") == len(mapping_files)
    assert "FAIL" not in result.stdout
    table = result.stdout.split("coverage:", 1)[1].splitlines()[1:]
    columns = table[0].split()
    rows = {line.split()[0]: line.split()[1:] for line in table[1:] if line.strip()}
    assert len(rows) == 23
    parties = load_parties(HOME / "parties.toml")
    assert sorted(columns) == sorted(parties.parties)
    for message_type, marks in rows.items():
        for party_id, mark in zip(columns, marks, strict=True):
            party = parties[party_id]
            expected = ("S" if message_type in party.sends else "") + (
                "R" if message_type in party.receives else ""
            )
            assert mark == (expected or "-"), (message_type, party_id)


def test_sandbox_command_serves_the_back_offices(tmp_path: Path) -> None:
    assert guichet("certs", "init", "--dir", str(tmp_path)).returncode == 0
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "sandbox",
            "--pki",
            str(tmp_path),
            "--no-respond",
            "--free-ports",
        ],
        cwd=HOME,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        _serve_and_check(process, tmp_path)
    assert process.returncode == 0


def _serve_and_check(process: subprocess.Popen[str], tmp_path: Path) -> None:
    try:
        assert process.stdout is not None
        endpoints: dict[str, str] = {}
        deadline = time.monotonic() + 30
        every = set(load_parties(HOME / "parties.toml").parties)
        while len(endpoints) < len(every) and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            party, url = line.split()
            endpoints[party] = url
        assert set(endpoints) == every
        # The hub's certificate opens the door and signs; what it sends is checked against the
        # schema.
        pki = DevPki.at(tmp_path)
        signer = SigningAuth(SigningKey.from_files(pki.hub_cert, pki.hub_key))
        with httpx.Client(verify=client_ssl_context(pki.hub), timeout=10, auth=signer) as client:
            response = client.post(
                f"{endpoints['be-vlg-wse']}/messages",
                content=b'{"kop": {}}',
                headers={"Content-Type": "application/json", "Idempotency-Key": "k1"},
            )
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_unknown_data_dir_for_audit_is_a_clear_error(tmp_path: Path) -> None:
    result = guichet("audit", "verify", "--data-dir", str(tmp_path / "nothing"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_validate_prints_every_problem_a_back_office_would_get(tmp_path: Path) -> None:
    import json

    good = guichet(
        "validate", "examples/be-platform/application.submitted.json", "--party", "be-platform"
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "application.submitted" in good.stdout
    body = json.loads((HOME / "examples/be-platform/application.submitted.json").read_bytes())
    body["application"]["applicant"]["birth"]["date"] = "15/03/1994"
    body["application"]["position"]["occupationCode"] = "25X2"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(body))
    bad = guichet("validate", str(broken), "--party", "be-platform")
    assert bad.returncode == 1
    problems = [json.loads(line) for line in bad.stdout.splitlines()[1:]]
    assert {p["code"] for p in problems} == {"schema.invalid"}
    assert {p["path"] for p in problems} == {
        "/application/applicant/birth/date",
        "/application/position/occupationCode",
    }
    soap = guichet("validate", "examples/be-fed-ibz/residence.decided.xml", "--party", "be-fed-ibz")
    assert soap.returncode == 0, soap.stdout + soap.stderr
    foreign = guichet(
        "validate", "examples/be-fed-ibz/residence.decided.xml", "--party", "be-platform"
    )
    assert foreign.returncode == 1
    assert "schema.wrong-namespace" in foreign.stdout


def test_outbox_commands_list_retry_and_discard_dead_letters(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    with running_hub(data, respond=False, delivery_backoff_s=0.05) as live:
        office = live.sandbox.offices["be-vlg-wse"]
        office.fail_next(2, 400)
        post_applications(live, 2)
        assert wait_until(lambda: len(live.hub.store.list_deliveries("dead", None, 10)) == 2)
        first, second = sorted(d.id for d in live.hub.store.list_deliveries("dead", None, 10))
    listed = guichet("outbox", "list", "--state", "dead", "--json", "--data-dir", str(data))
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["deliveries"]
    assert [e["id"] for e in entries] == [second, first]  # newest first
    assert {(e["state"], e["lastStatus"], e["lastError"]) for e in entries} == {
        ("dead", 400, "rejected: HTTP 400")
    }
    table = guichet("outbox", "list", "--receiver", "be-vlg-wse", "--data-dir", str(data))
    assert table.returncode == 0, table.stderr
    assert "rejected: HTTP 400" in table.stdout
    assert table.stdout.rstrip().endswith("2 deliveries")

    retried = guichet("outbox", "retry", str(first), "--reason", "fixed", "--data-dir", str(data))
    assert retried.returncode == 0, retried.stderr
    assert "requeued" in retried.stdout
    again = guichet("outbox", "retry", str(first), "--data-dir", str(data))
    assert again.returncode == 1
    assert "outbox.not-dead" in again.stderr
    missing = guichet("outbox", "discard", "424242", "--reason", "x", "--data-dir", str(data))
    assert (missing.returncode, "outbox.not-found" in missing.stderr) == (1, True)
    no_reason = guichet("outbox", "discard", str(second), "--data-dir", str(data))
    assert no_reason.returncode == 2  # argparse: --reason is required
    dropped = guichet(
        "outbox", "discard", str(second), "--reason", "sent by post", "--data-dir", str(data)
    )
    assert dropped.returncode == 0, dropped.stderr

    rows = {
        e["id"]: e
        for e in json.loads(guichet("outbox", "list", "--json", "--data-dir", str(data)).stdout)[
            "deliveries"
        ]
    }
    assert (rows[first]["state"], rows[first]["attempts"]) == ("pending", 1)
    assert (rows[second]["state"], rows[second]["reason"]) == ("discarded", "sent by post")
    store = open_store(None, data)
    try:
        sealed = [json.loads(leaf.record) for leaf in store.leaves()]
    finally:
        store.close()
    actions = [r for r in sealed if r["event"] in ("delivery.requeued", "delivery.discarded")]
    assert [(r["event"], r["deliveryId"], r["reason"]) for r in actions] == [
        ("delivery.requeued", first, "fixed"),
        ("delivery.discarded", second, "sent by post"),
    ]
    assert actions[0]["by"]["command"] == "guichet outbox retry"
    verify = guichet("audit", "verify", "--data-dir", str(data))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    bad = guichet("outbox", "list", "--limit", "0", "--data-dir", str(data))
    assert (bad.returncode, "outbox.invalid" in bad.stderr) == (1, True)
