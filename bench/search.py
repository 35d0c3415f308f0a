"""Benchmark `search`: random-then-grid with a budget of B trials against an exhaustive grid of at least 4B
trials, on digits validation accuracy, over a space whose good region is narrow (SGD's learning rate and the
L2 penalty, each over six decades: too small learns nothing in a few epochs, too large diverges).

`two_worker_speedup`: the wall time of the same random-then-grid search (same config, same plan, a fresh study)
with `search.n_jobs` 1 over its wall time with `search.n_jobs` 2 (this process and one `tune-worker` process it
starts, which loads TensorFlow and the split before its first trial: that start-up is in the two-worker time). On
an N-core machine it can be at most min(2, N); on the 2-core machine of the recorded entry at most 2, and less in
practice, since one trial's TensorFlow already spreads over both cores and the two processes then share them.
`load_average`: the 1-minute load average at the start of the two timed searches, since other work on the machine
skews the ratio.

`target_search_*`: a search under a board's limits (`search.targets`) on digits: the Cortex-M4 preset (256 KB RAM,
1 MB flash, CMSIS-NN at 120 MHz) with a 5 ms deadline, over the CNN's widths and depths, its dense layer and the
learning rate. `target_search_fits` and `target_search_meets_deadline` (1 or 0) are the verdicts of the board's
champion (TFLM arena and flash measured, latency estimated by deploy/latency.py), `target_search_accuracy_gap`
the unconstrained champion's validation accuracy minus the board's (both the best trial trained in full), and
`target_search_latency_ms` the board champion's estimate.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from sklearn.model_selection import ParameterGrid

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.stages import clean, split, train, tune
from pipelines.training import search, tuning

WORK = Path(__file__).parent / ".work" / "search"
BUDGET = 8
SPACE = {"train.learning_rate": {"kind": "log_uniform", "low": 1e-5, "high": 1.0},
         "model.l2": {"kind": "log_uniform", "low": 1e-6, "high": 1.0}}


def run() -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    tree = config_module.to_dict(config_module.load("configs/digits.yaml", [f"runtime.root={WORK}"]))
    tree["runtime"]["verbose"] = 0
    tree["train"].update({"optimizer": "sgd", "patience": 100})
    tree["search"].update({"space": SPACE, "n_trials": BUDGET // 2, "grid_points": 3, "top_k": 2,
                           "max_trials": BUDGET, "epochs": 6, "seed": 0})
    config = config_module.from_dict(tree)
    for stage in (clean, split, train):
        stage.run(config)
    load = [os.getloadavg()[0]]
    started = time.perf_counter()
    chained = tuning.search_trials(tuning.Search(config))
    chained_seconds = time.perf_counter() - started
    plan = full_grid(config.search.space, 6)  # 36 >= 4 * BUDGET
    exhaustive_config = config_module.replace_path(config, "search.max_trials", 0)
    job = tuning.Search(exhaustive_config)
    study = job.study()
    study.set_user_attr("deadline", float("inf"))
    tuning.run_phase(job, study, "exhaustive", plan)
    exhaustive = search.records(study, "val/accuracy", config.search.space)
    two_workers = config_module.replace_path(config, "search.n_jobs", 2)
    load.append(os.getloadavg()[0])
    started = time.perf_counter()
    paired = tuning.search_trials(tuning.Search(two_workers), fresh=True)  # the same study name: afresh
    paired_seconds = time.perf_counter() - started
    return {"random_then_grid_best": max(trial["val/accuracy"] for trial in chained),
            "random_then_grid_trials": len(chained), "grid_best": max(trial["val/accuracy"] for trial in exhaustive),
            "grid_trials": len(exhaustive), "random_then_grid_seconds": round(chained_seconds, 1),
            "two_worker_seconds": round(paired_seconds, 1), "two_worker_trials": len(paired),
            "two_worker_processes": len({trial["worker"] for trial in paired}),
            "two_worker_best": max(trial["val/accuracy"] for trial in paired),
            "two_worker_speedup": round(chained_seconds / paired_seconds, 2),
            "load_average": [round(value, 2) for value in load], **board_search()}


TARGET_SPACE = {"model.filters": {"kind": "choice", "values": [[4, 8], [8, 16], [16, 32], [32, 64]]},
                "model.dense_units": {"kind": "choice", "values": [32, 128]},
                "train.learning_rate": {"kind": "log_uniform", "low": 3e-4, "high": 3e-3}}


def board_search() -> dict:
    """The digits search under the Cortex-M4's limits at a 5 ms deadline (`search.targets`)."""
    root = WORK.parent / "search-targets"
    shutil.rmtree(root, ignore_errors=True)
    tree = config_module.to_dict(config_module.load("configs/digits.yaml", [f"runtime.root={root}"]))
    tree["runtime"]["verbose"] = 0
    tree["search"].update({"space": TARGET_SPACE, "n_trials": 8, "grid_points": 0, "max_trials": 8, "epochs": 30,
                           "prune_warmup": 0, "seed": 0, "targets": [{"preset": "cortex_m4", "deadline_ms": 5.0}]})
    config = config_module.from_dict(tree)
    for stage in (clean, split, train):
        stage.run(config)
    metrics = tune.run(config).metrics
    rows = [row for row in workspace.read_json(workspace.stage_dir(root, config.experiment, "tune") / "pareto.json")
            ["rows"] if row["board"] == "cortex_m4"]
    chosen = [row for row in rows if row["trial"] == metrics.get("tune/cortex_m4/trial")]
    figures = {"target_search_trials": len(rows), "target_search_feasible_trials": sum(row["feasible"] for row in rows),
               "target_search_fits": int(bool(chosen) and chosen[0]["fits"]),
               "target_search_meets_deadline": int(bool(chosen) and chosen[0]["meets_deadline"])}
    if chosen:
        figures.update({"target_search_accuracy_gap": round(metrics["tune/final_val_accuracy"]
                                                            - metrics["tune/cortex_m4/val/accuracy"], 4),
                        "target_search_latency_ms": round(chosen[0]["latency_ms"], 2),
                        "target_search_board_val_accuracy": round(metrics["tune/cortex_m4/val/accuracy"], 4),
                        "target_search_unconstrained_val_accuracy": round(metrics["tune/final_val_accuracy"], 4)})
    return figures


def full_grid(space: dict[str, config_module.ParamSpace], points: int) -> list[dict]:
    """An exhaustive grid over the whole space (the benchmark's reference)."""
    grid = {path: list(param.values) if param.kind == "choice" else
            search.axis(param, param.low, param.high, points) for path, param in space.items()}
    return [{path: search.plain(value) for path, value in params.items()} for params in ParameterGrid(grid)]
