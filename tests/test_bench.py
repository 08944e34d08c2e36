"""The benchmarks still run (tiny sizes: numbers here mean nothing, the last line's shape does)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HOME = Path(__file__).resolve().parents[1]


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
    result = subprocess.run(
        [sys.executable, str(HOME / "bench" / script), *args],
        cwd=HOME,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(last_line, last), last
