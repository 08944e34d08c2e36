"""Shared fixtures: one development PKI per test session, the real hub on loopback."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from gateway.certs import DevPki
from gateway.config import HubConfig, Settings
from gateway.testing import RunningHub, ensure_pki, guichet_command, running_hub

# HYPOTHESIS_PROFILE=ci: the same examples on every run, no example database.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

HOME = Path(__file__).resolve().parents[1]
EXAMPLES = HOME / "examples"

# The whole suite runs on each store: on SQLite by default, on PostgreSQL when this names a
# database (scripts/test runs it both ways). Each data dir then gets a schema of its own.
POSTGRES = os.environ.get("GUICHET_TEST_POSTGRES")
# A test that opens the SQLite file itself (to tamper with it as someone with access to the
# disk would, or to read it as an auditor's copy) is about that file: it runs on SQLite only.
_SQLITE_FILE = re.compile(
    r"sqlite3|guichet\.db|read_payload\(|read_log\(|\braw\(|store\.path\b"
    r"|\btamper\(|copy_of\(|\b_copy\("
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not POSTGRES:
        return
    skip = pytest.mark.skip(reason="works on the SQLite file itself: SQLite store only")
    for item in items:
        functions = [getattr(item, "function", None)]
        fixtures = getattr(item, "_fixtureinfo", None)
        if fixtures is not None:  # and the fixtures it uses
            functions += [d.func for defs in fixtures.name2fixturedefs.values() for d in defs]
        sources = (inspect.getsource(f) for f in functions if inspect.isfunction(f))
        if item.get_closest_marker("sqlite_file") or any(map(_SQLITE_FILE.search, sources)):
            item.add_marker(skip)


def postgres_schema_url(base: str, name: str) -> str:
    """``base`` (a PostgreSQL database) narrowed to schema ``name``, created if need be."""
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{name}"')
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options=-csearch_path%3D{name}"


# This run's schemas are named t_<run>_…: unique to the run (temporary folders are reused across
# runs), the same in every copy of this module (pytest imports it as conftest and tests import it
# as tests.conftest) and in the processes the tests start.
_RUN = os.environ.setdefault("GUICHET_TEST_RUN", uuid.uuid4().hex[:8])


def store_url_for(data_dir: Path) -> str:
    """On the PostgreSQL run, the store of a data dir: a schema of the test database."""
    assert POSTGRES
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return postgres_schema_url(POSTGRES, f"t_{_RUN}_{digest}")


@pytest.fixture(scope="session", autouse=True)
def _store_per_data_dir() -> Iterator[None]:
    """On the PostgreSQL run: every data dir's store is a schema of the test database."""
    if not POSTGRES:
        yield
        return
    import psycopg

    from gateway import store

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "default_url", store_url_for)
        yield
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        names = conn.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s",
            (f"t\\_{_RUN}\\_%",),
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def guichet(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """The ``guichet`` command in a process of its own (``env``: ``GUICHET_*`` settings). On
    the PostgreSQL run, ``--data-dir D`` comes with D's store (``GUICHET_STORE``), as an
    operator running the hub on PostgreSQL would set it."""
    argv = [str(a) for a in args]
    settings = {k.removeprefix("GUICHET_").lower(): v for k, v in (env or {}).items()}
    if POSTGRES and "--data-dir" in argv:
        settings["store"] = store_url_for(Path(argv[argv.index("--data-dir") + 1]))
    return guichet_command(*argv, settings=settings, timeout=timeout)


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
