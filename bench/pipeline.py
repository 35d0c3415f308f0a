"""Benchmark `pipeline`: `make pipeline` on digits from nothing, then again (every stage should skip), in this
checkout's environment (`first_run_s`, `second_run_s`); and what a new user waits for: the committed HEAD cloned
into a temporary folder, `make setup` there (a fresh .venv from the pinned dependencies; pip's download cache as
this machine has it, so the figure leaves out the download, which depends on the network), then `make
pipeline` there (`fresh_clone_setup_s`, `fresh_clone_pipeline_s` and their sum `fresh_clone_total_s`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines.core import workspace

CONFIG = "configs/digits.yaml"


def _timed(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines", "all", "--config", CONFIG, "--set", f"runtime.root={root}",
                    "--set", "runtime.verbose=0"], check=True, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    return time.perf_counter() - started


def fresh_clone() -> dict:
    """`make setup` and then `make pipeline` in a fresh clone of HEAD, each timed."""
    # MAKEFLAGS and friends, and the outer make's command-line variables, which make exports to its recipes: under
    # `make bench ARGS=pipeline` they would hand ARGS=pipeline to the inner make
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("MLFLOW_TRACKING_URI", "VIRTUAL_ENV", "PYTHONPATH", "TF_USE_LEGACY_KERAS",
                                  "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "ARGS", "CONFIG")}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as folder:
        clone = Path(folder) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(Path(__file__).parent.parent), str(clone)], check=True)
        seconds = {}
        for target in ("setup", "pipeline"):
            started = time.perf_counter()
            subprocess.run(["make", target], cwd=clone, check=True, env=environment, stdout=subprocess.DEVNULL)
            seconds[target] = time.perf_counter() - started
    return {"fresh_clone_setup_s": round(seconds["setup"], 1), "fresh_clone_pipeline_s": round(seconds["pipeline"], 1),
            "fresh_clone_total_s": round(sum(seconds.values()), 1)}


def run() -> dict:
    root = Path(__file__).parent / ".work" / "pipeline"
    shutil.rmtree(root, ignore_errors=True)
    first, second = _timed(root), _timed(root)
    report = workspace.read_json(workspace.stage_dir(root, "digits", "evaluate") / "test_report.json")
    return {"first_run_s": round(first, 1), "second_run_s": round(second, 1),
            "test_accuracy": report["results"]["keras"]["accuracy"],
            "test_int8_accuracy": report["results"]["int8"]["accuracy"], **fresh_clone()}
