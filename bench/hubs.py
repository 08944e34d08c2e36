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
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

HOME = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the hub exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the hub did not start listening")


def is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql:", "postgres:"))


@contextlib.contextmanager
def run_store(url: str | None, data_dir: Path) -> Iterator[str]:
    """The store address the hubs get: the data dir's SQLite file, or ``url`` with a fresh
    schema of its own in its search_path (created here, dropped on the way out)."""
    if not is_postgres(url):
        yield url or f"sqlite:///{(data_dir / 'guichet.db').resolve()}"
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


def init_pki(data_dir: Path, env: Mapping[str, str]) -> Path:
    pki = data_dir / "pki"
    subprocess.run(
        [sys.executable, "-m", "gateway.cli", "certs", "init", "--dir", str(pki)],
        cwd=HOME,
        env=dict(env),
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return pki


@dataclass
class Replicas:
    processes: list[subprocess.Popen[bytes]]
    ports: list[int]


@contextlib.contextmanager
def serve(
    data_dir: Path,
    store: str,
    replicas: int,
    env: Mapping[str, str],
    endpoints: Mapping[str, str] | None = None,
    log: Any = subprocess.DEVNULL,
) -> Iterator[Replicas]:
    """``replicas`` ``guichet serve`` processes on free ports; SIGTERM to each on the way out."""
    if replicas > 1 and not is_postgres(store):
        raise SystemExit("--replicas > 1 needs a PostgreSQL store (SQLite has one writer)")
    extra: list[str] = []
    for party, url in (endpoints or {}).items():
        extra += ["--endpoint", f"{party}={url}"]
    running = Replicas([], [])

    def start(count: int) -> None:
        started = []
        for _ in range(count):
            port = free_port()
            command: Sequence[str] = [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
                "--store",
                store,
                *extra,
            ]
            process = subprocess.Popen(command, cwd=HOME, env=dict(env), stdout=log, stderr=log)
            running.processes.append(process)
            running.ports.append(port)
            started.append((port, process))
        for port, process in started:
            wait_for_port(port, process)

    try:
        start(1)  # alone: it writes person-ref.key and migrates the store
        start(replicas - 1)
        yield running
    finally:
        for process in running.processes:
            process.terminate()
        for process in running.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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


def hub_env(**settings: str) -> dict[str, str]:
    return {**os.environ, "GUICHET_LOG_LEVEL": "warning", **settings}


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]
