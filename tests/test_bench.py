"""The benchmarks still run (tiny sizes: numbers here mean nothing, the last line's shape does)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HOME = Path(__file__).resolve().parents[1]
# The HTTP benchmarks on PostgreSQL, when the suite has a database (each run makes its schema).
POSTGRES = os.environ.get("GUICHET_TEST_POSTGRES")
needs_postgres = pytest.mark.skipif(not POSTGRES, reason="GUICHET_TEST_POSTGRES is not set")
_NUMBER = r"(\d+(?:\.\d+)?)"
_HTTP = rf"http_msgs_per_s={_NUMBER} p50_ms={_NUMBER} p99_ms={_NUMBER}"
_DELIVERY = (
    rf"delivered_msgs_per_s={_NUMBER} accepted_msgs_per_s={_NUMBER}"
    rf" deliveries_per_s={_NUMBER} lag_s={_NUMBER}"
)


def run_bench(script: str, args: list[str]) -> str:
    result = subprocess.run(
        [sys.executable, str(HOME / "bench" / script), *args],
        cwd=HOME,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("script", "args", "last_line"),
    [
        ("evidence.py", ["--records", "200", "--threads", "4"],
         r"seal_records_per_s=\d+ verify_records_per_s=\d+"),
        ("pipeline.py", ["--messages", "20", "--rounds", "1"],
         r"pipeline_msgs_per_s=[\d.]+ floor_msgs_per_s=[\d.]+ ratio=[\d.]+"),
    ],
)  # fmt: skip
def test_a_benchmark_runs_and_prints_its_last_line(
    script: str, args: list[str], last_line: str
) -> None:
    last = run_bench(script, args)
    assert re.fullmatch(last_line, last), last


def _positive(pattern: str, line: str, count: int) -> None:
    """``line`` has ``pattern``'s shape and its first ``count`` numbers are above zero."""
    found = re.fullmatch(pattern, line)
    assert found, line
    assert all(float(value) > 0 for value in found.groups()[:count]), line


# The bench options of each store: the embedded one, and PostgreSQL with two replicas.
STORES = [
    pytest.param([], id="sqlite"),
    pytest.param(
        ["--store", POSTGRES or "", "--replicas", "2"],
        id="postgresql-2-replicas",
        marks=needs_postgres,
    ),
]


@pytest.mark.parametrize("store", STORES)
def test_http_load_accepts_on_each_store(store: list[str]) -> None:
    last = run_bench("http_load.py", ["--clients", "2", "--seconds", "1", *store])
    _positive(_HTTP, last, 3)


@pytest.mark.parametrize("store", STORES)
def test_delivery_delivers_every_message(store: list[str]) -> None:
    # The exit status says every delivery was made and every back office received its message.
    args = ["--messages", "12", "--clients", "3", "--timeout", "120", *store]
    last = run_bench("delivery.py", args)
    _positive(_DELIVERY, last, 3)


def test_replicas_need_a_shared_store() -> None:
    result = subprocess.run(
        [sys.executable, str(HOME / "bench" / "http_load.py"), "--replicas", "2"],
        cwd=HOME,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "PostgreSQL" in result.stdout + result.stderr
