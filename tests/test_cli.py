"""The `guichet` command as an operator or integrator runs it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.certs import DevPki
from gateway.config import load_parties
from gateway.service.tls import client_ssl_context
from tests.conftest import HOME, guichet


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
        # The hub's certificate opens the door; what it sends is checked against the schema.
        pki = DevPki.at(tmp_path)
        with httpx.Client(verify=client_ssl_context(pki.hub), timeout=10) as client:
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
