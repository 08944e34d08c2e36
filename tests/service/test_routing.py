"""Routing configuration and the competent region.

The competent region comes from where the worker will work, as ``[cases.opened_by]`` says: the
establishment unit first, then the first Belgian place of work; no Belgian workplace, or a
postcode not in use, is a clear refusal that seals nothing. parties.toml is checked at load."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_parties
from gateway.errors import ConfigurationError
from gateway.testing import RunningHub
from tests.conftest import EXAMPLES

HOME = Path(__file__).resolve().parents[2]
JSON = {"Content-Type": "application/json"}


def application(unit: dict[str, str], worksites: list[dict[str, str]]) -> dict[str, Any]:
    body = json.loads((EXAMPLES / "be-platform" / "application.submitted.json").read_bytes())
    body["header"]["messageId"] = str(uuid.uuid4())
    body["header"]["caseReference"] = f"SP-{uuid.uuid4().hex[:12]}"
    body["application"]["employer"]["workplace"]["address"].update(unit)
    body["application"]["position"]["worksites"] = worksites
    return body


def post(hub: RunningHub, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    with hub.client("be-platform") as client:
        response = client.post("/v1/messages", content=json.dumps(body).encode(), headers=JSON)
    return response.status_code, response.json()


LILLE = {"street": "Rue Nationale", "number": "1", "postalCode": "59000", "city": "Lille",
         "country": "FRA"}  # fmt: skip
GHENT = {"street": "Technologiepark", "number": "119", "postalCode": "9052", "city": "Gent",
         "country": "BEL"}  # fmt: skip
AACHEN = {"street": "Markt", "number": "1", "postalCode": "52062", "city": "Aachen",
          "country": "DEU"}  # fmt: skip


def test_an_employer_without_a_belgian_unit_goes_to_the_region_of_the_work(
    quiet_hub: RunningHub,
) -> None:
    status, receipt = post(quiet_hub, application(LILLE, [AACHEN, GHENT]))
    assert status == 202, receipt
    assert receipt["receivers"] == ["be-vlg-wse"]


def test_no_belgian_workplace_at_all_is_refused_and_names_where_it_looked(
    quiet_hub: RunningHub,
) -> None:
    before = quiet_hub.hub.store.leaves()
    status, problem = post(quiet_hub, application(LILLE, [AACHEN]))
    assert status == 422
    assert problem["code"] == "routing.no-region"
    assert "establishmentUnit" in problem["detail"] and "placesOfWork" in problem["detail"]
    accepted = [
        leaf
        for leaf in quiet_hub.hub.store.leaves()[len(before) :]
        if json.loads(leaf.record)["event"] == "exchange.accepted"
    ]
    assert accepted == []


def test_a_belgian_postcode_not_in_use_is_refused_with_its_place(quiet_hub: RunningHub) -> None:
    unit = {"postalCode": "1999", "city": "Nowhere", "country": "BEL"}
    status, problem = post(quiet_hub, application(unit, [GHENT]))
    assert status == 422
    assert problem["code"] == "routing.no-region"
    assert "1999" in problem["detail"]
    assert problem["path"] == "/application/employer/workplace/address/postalCode"
    assert problem["schemaId"] == "be-platform"


def _parties_with(tmp_path: Path, cases: str) -> Path:
    text = (HOME / "parties.toml").read_text()
    start = text.index("[cases.opened_by]")
    end = text.index("[[routes]]")
    path = tmp_path / "parties.toml"
    path.write_text(text[:start] + cases + "\n" + text[end:])
    return path


@pytest.mark.parametrize(
    ("cases", "message"),
    [
        ('[cases]\nopened_by = ["application.submitted"]\n', "must map each message type"),
        ('[cases.opened_by]\n"application.submitted" = []\n', "non-empty list of XPaths"),
        ('[cases.opened_by]\n"application.submitted" = ["c:a[["]\n', "bad XPath"),
        ('[cases.opened_by]\n"application.submitted" = ["pc:unit/pc:postcode"]\n', "bad XPath"),
        ('[cases.opened_by]\n"application.submited" = ["c:a"]\n', "a type that opens a case"),
        ('[cases.opened_by]\n"admissibility.decided" = ["c:a"]\n', "a type that opens a case"),
        ("[cases]\nopened_by = {}\nclosed_by = []\n", r"\[cases\] has unknown keys"),
    ],
)
def test_case_openers_are_checked_at_load(tmp_path: Path, cases: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_parties(_parties_with(tmp_path, cases))


@pytest.mark.parametrize(
    ("append", "message"),
    [
        ('\n[[routes]]\ntype = "problem"\nto = ["@correlated-sender"]\nnames = "x"\n',
         r"route problem: unknown keys \['names'\]"),
        ('\n[timeouts]\nx = 1\n', r"unknown tables \['timeouts'\]"),
        ('\n[[routes]]\ntype = "problem"\nto = ["@correlated-sender"]\nwhen = "x:y = 1"\n',
         "bad 'when'"),
    ],
)  # fmt: skip
def test_a_stray_key_in_parties_toml_is_refused(tmp_path: Path, append: str, message: str) -> None:
    path = tmp_path / "parties.toml"
    path.write_text((HOME / "parties.toml").read_text() + append)
    with pytest.raises(ConfigurationError, match=message):
        load_parties(path)


def test_a_stray_key_in_a_party_is_refused(tmp_path: Path) -> None:
    text = (HOME / "parties.toml").read_text()
    path = tmp_path / "parties.toml"
    path.write_text(text.replace('role = "portal"\n', 'role = "portal"\nrol = "portal"\n', 1))
    with pytest.raises(ConfigurationError, match=r"party be-platform: unknown keys \['rol'\]"):
        load_parties(path)
