"""The runnable example in examples/ must keep working: it is the runtime's tutorial."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "actors_pipeline.py"


def test_actors_example_runs():
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "jobs crashed (job-3 hit a bug)" in result.stdout
    assert "stopped; final total 5, restarts 1" in result.stdout
