"""Benchmark `pipeline`: `make pipeline` on digits from nothing, then again (every stage should skip)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipelines.core import workspace

CONFIG = "configs/digits.yaml"


def _timed(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines", "all", "--config", CONFIG, "--set", f"runtime.root={root}",
                    "--set", "runtime.verbose=0"], check=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    return time.perf_counter() - started


def run() -> dict:
    root = Path(__file__).parent / ".work" / "pipeline"
    shutil.rmtree(root, ignore_errors=True)
    first, second = _timed(root), _timed(root)
    report = workspace.read_json(workspace.stage_dir(root, "digits", "evaluate") / "test_report.json")
    return {"first_run_s": round(first, 1), "second_run_s": round(second, 1),
            "test_accuracy": report["results"]["keras"]["accuracy"],
            "test_int8_accuracy": report["results"]["int8"]["accuracy"]}
