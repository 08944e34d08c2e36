"""What the HTTP benchmarks share: a store for the run, and N ``guichet serve`` replicas of one hub.

``--store``: none (the embedded SQLite file in the run's data dir) or a PostgreSQL address; for
PostgreSQL the run gets a fresh schema of its own, dropped afterwards, so runs never see each
other's rows. ``--replicas N``: N ``guichet serve`` processes on their own ports, sharing the data
dir (pki/, person-ref.key) and the store, as replicas behind a load balancer do. The first starts
alone (it writes person-ref.key and migrates the store); the others start together after it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from gateway.store import default_url, sqlite_path
from gateway.testing import HubProcess, guichet_command, start_hub_process

HOME = Path(__file__).resolve().parents[1]


def is_postgres(url: str | None) -> bool:
    return url is not None and sqlite_path(url) is None


@contextlib.contextmanager
def run_store(url: str | None, data_dir: Path) -> Iterator[str]:
    """The store address the hubs get: the data dir's SQLite file, or ``url`` with a fresh
    schema of its own in its search_path (created here, dropped on the way out)."""
    if not is_postgres(url):
        yield url or default_url(data_dir)
        return
    import psycopg

    assert url is not None
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in url else "?"
    # application_name: the run's backends can be told apart (their CPU is the store's share).
    options = quote(f"-csearch_path={schema}", safe="")
    try:
        yield f"{url}{separator}options={options}&application_name={schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def store_label(url: str | None) -> str:
    return "postgresql" if is_postgres(url) else "sqlite"


def init_pki(data_dir: Path) -> Path:
    pki = data_dir / "pki"
    done = guichet_command("certs", "init", "--dir", str(pki))
    if done.returncode != 0:
        raise RuntimeError(f"certs init failed: {done.stderr}")
    return pki


@dataclass
class Replicas:
    hubs: list[HubProcess]

    @property
    def pids(self) -> list[int]:
        return [hub.pid for hub in self.hubs]

    @property
    def ports(self) -> list[int]:
        return [hub.port for hub in self.hubs]


@contextlib.contextmanager
def serve(
    data_dir: Path,
    store: str,
    replicas: int,
    settings: Mapping[str, str],
    endpoints: Mapping[str, str] | None = None,
) -> Iterator[Replicas]:
    """``replicas`` ``guichet serve`` processes on free ports (gateway.testing's), each started
    once the one before answers (the first writes person-ref.key and migrates the store);
    SIGTERM to each on the way out."""
    if replicas > 1 and not is_postgres(store):
        raise SystemExit("--replicas > 1 needs a PostgreSQL store (SQLite has one writer)")
    running = Replicas([])
    try:
        for _ in range(replicas):
            running.hubs.append(
                start_hub_process(data_dir, store=store, endpoints=endpoints, settings=settings)
            )
        yield running
    finally:
        for hub in running.hubs:
            if hub.alive():
                hub.terminate()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time the processes have used so far (Linux /proc; 0 elsewhere)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def store_pids(store: str) -> list[int]:
    """The PostgreSQL backends serving the run (same machine): their CPU is the store's cost."""
    if not is_postgres(store):
        return []
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(store).get("application_name")
    with psycopg.connect(store, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE application_name = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return [int(row[0]) for row in rows]


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def hub_settings(**settings: str) -> dict[str, str]:
    """``Settings`` fields for the benchmarked hubs: quiet logs, then ``settings``."""
    return {"log_level": "warning", **settings}


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]
