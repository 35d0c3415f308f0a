"""Peak resident memory of analyze and clean on a table, with data health on, at two sizes (not a registered
benchmark: `python -m bench.table_memory` prints its figures and leaves bench/results.json alone).

breast_cancer's 569 rows are repeated to N rows (20,000 and 200,000 by default; `TABLE_SIZES=2000,20000`
overrides), each repeat with Gaussian noise of 5% of the column's standard deviation (seeded), written as a CSV
under `bench/.work/table_memory/`. Each stage runs in a fresh process, `python -m pipelines <stage> --config
... --force` with `health.action: report` (analyze's `label_health`: out-of-fold kNN, cleanlab's
find_label_issues and Datalab's outliers and near-duplicates on the rows outside the test share), and its
peak resident memory is the child's `ru_maxrss` from `os.wait4` (what `/usr/bin/time -v` reports).

Figures (label 20k, 200k): `table_peak_rss_mb_<stage>_<label>`, `table_seconds_<stage>_<label>`,
`table_peak_rss_growth` (the largest ratio, larger N to smaller, over the two stages).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

WORK = Path(__file__).parent / ".work" / "table_memory"
REPOSITORY = Path(__file__).parent.parent
SIZES = (20_000, 200_000)
STAGES = ("analyze", "clean")


def label(count: int) -> str:
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


def make_table(path: Path, count: int, seed: int = 0) -> Path:
    """breast_cancer repeated to `count` rows, each value moved by noise of 5% of its column's deviation."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.drop(columns="target")
    rng = np.random.default_rng(seed)
    rows = frame.iloc[np.arange(count) % len(frame)].reset_index(drop=True)
    rows = rows + rng.normal(0.0, 1.0, rows.shape) * (0.05 * frame.std().to_numpy())
    rows["diagnosis"] = np.asarray(data.target_names)[data.target.to_numpy()[np.arange(count) % len(frame)]]
    rows.to_csv(path, index=False, float_format="%.6g")
    return path


def run_stage(stage: str, config_file: Path) -> tuple[float, float]:
    """(peak resident MB, wall seconds) of one stage in a fresh process."""
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    logs = WORK / f"{config_file.stem}-{stage}.log"
    with open(logs, "w") as output:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "pipelines", stage, "--config", str(config_file), "--force"],
                                 cwd=REPOSITORY, env=environment, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"{stage} failed on {config_file.name}; see {logs}")
    return usage.ru_maxrss / 1024, seconds


def run() -> dict:
    text = os.environ.get("TABLE_SIZES", "").strip()
    counts = sorted(int(part) for part in text.split(",")) if text else list(SIZES)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    figures = {}
    for count in counts:
        name = label(count)
        make_table(WORK / f"table-{name}.csv", count)
        config = {"experiment": f"table_memory_{name}", "runtime": {"root": str(WORK.resolve())},
                  "data": {"source": "csv", "path": f"table-{name}.csv", "target": "diagnosis"},
                  "model": {"architecture": "mlp"}, "health": {"action": "report"}}
        config_file = WORK / f"table_memory_{name}.yaml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        for stage in STAGES:
            peak, seconds = run_stage(stage, config_file)
            figures[f"table_peak_rss_mb_{stage}_{name}"] = round(peak, 1)
            figures[f"table_seconds_{stage}_{name}"] = round(seconds, 1)
            print(f"[table_memory] {name} {stage}: {seconds:.1f} s, peak {peak:.0f} MB", flush=True)
    small, large = label(counts[0]), label(counts[-1])
    figures["table_peak_rss_growth"] = round(max(figures[f"table_peak_rss_mb_{stage}_{large}"] /
                                                 figures[f"table_peak_rss_mb_{stage}_{small}"] for stage in STAGES), 3)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
