"""Shared fixtures: one development PKI per test session, the real hub on loopback."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.certs import DevPki
from gateway.config import HubConfig, Settings
from gateway.testing import RunningHub, ensure_pki, running_hub

HOME = Path(__file__).resolve().parents[1]
EXAMPLES = HOME / "examples"

# The whole suite runs on each store: on SQLite by default, on PostgreSQL when this names a
# database (scripts/test runs it both ways). Each data dir then gets a schema of its own.
POSTGRES = os.environ.get("GUICHET_TEST_POSTGRES")
# A test that opens the SQLite file itself (to tamper with it as someone with access to the
# disk would, or to read it as an auditor's copy) is about that file: it runs on SQLite only.
_SQLITE_FILE = re.compile(r"sqlite3|guichet\.db|read_payload\(|read_log\(|\braw\(|store\.path\b")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not POSTGRES:
        return
    skip = pytest.mark.skip(reason="works on the SQLite file itself: SQLite store only")
    for item in items:
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function is not None else ""
        if item.get_closest_marker("sqlite_file") or _SQLITE_FILE.search(source):
            item.add_marker(skip)


def postgres_schema_url(base: str, name: str) -> str:
    """``base`` (a PostgreSQL database) narrowed to a fresh schema ``name``, created empty."""
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{name}"')
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{name}"


@pytest.fixture(scope="session", autouse=True)
def _store_per_data_dir() -> Iterator[None]:
    """On the PostgreSQL run: every data dir's store is a schema of the test database."""
    if not POSTGRES:
        yield
        return
    import psycopg

    from gateway import store

    schemas: dict[Path, str] = {}

    def url_for(data_dir: Path) -> str:
        data_dir = data_dir.resolve()
        if data_dir not in schemas:
            name = "t_" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:24]
            schemas[data_dir] = postgres_schema_url(POSTGRES, name)
        return schemas[data_dir]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "default_url", url_for)
        yield
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        for url in schemas.values():
            name = url.rsplit("%3D", 1)[1]
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_pki(HubConfig.load(Settings()), tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def quiet_hub(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> Iterator[RunningHub]:
    """The hub alone (no back offices, deliveries paused): for what it accepts and refuses."""
    with running_hub(
        tmp_path_factory.mktemp("hub"),
        sandbox=False,
        pki=pki,
        delivery_workers=0,
        body_timeout_s=1.0,
    ) as running:
        yield running


def post_applications(running: RunningHub, count: int) -> list[dict[str, Any]]:
    """The portal's example application, ``count`` times with fresh message ids, each accepted
    (202); the bodies sent."""
    sent = []
    with running.client("be-platform") as client:
        for _ in range(count):
            body = json.loads(
                (EXAMPLES / "be-platform" / "application.submitted.json").read_bytes()
            )
            body["header"]["messageId"] = str(uuid.uuid4())
            response = client.post(
                "/v1/messages",
                content=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 202, response.text
            sent.append(body)
    return sent
