"""The benchmarks still run (tiny sizes: numbers here mean nothing, the last line's shape does)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HOME = Path(__file__).resolve().parents[1]


def test_the_evidence_benchmark_runs_and_prints_its_rates() -> None:
    result = subprocess.run(
        [sys.executable, str(HOME / "bench" / "evidence.py"), "--records", "200", "--threads", "4"],
        cwd=HOME,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"seal_records_per_s=\d+ verify_records_per_s=\d+", last), last


def test_the_pipeline_benchmark_runs_and_prints_its_ratio() -> None:
    result = subprocess.run(
        [sys.executable, str(HOME / "bench" / "pipeline.py"), "--messages", "20", "--rounds", "1"],
        cwd=HOME,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"pipeline_msgs_per_s=[\d.]+ floor_msgs_per_s=[\d.]+ ratio=[\d.]+", last), (
        last
    )
