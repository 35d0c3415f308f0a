"""Benchmark `search`: random-then-grid on the default plan (`search.n_trials`, `sampler`, `grid_points`,
`top_k` and the budget `max_trials` B as `SearchConfig` has them) against an exhaustive grid of at least 4B
trials, on digits validation accuracy, over a space whose good region is narrow (SGD's learning rate and the
L2 penalty, each over six decades: too small learns nothing in a few epochs, too large diverges), with the plain
CNN the bench began with (no batch normalization, no augmentation, whatever the preset trains with). The same on a
table (`table_*`: configs/breast_cancer.yaml's MLP, 20 epochs per trial, ranked by validation accuracy).
Random-then-grid runs with each phase-1 sampler (`random`, `qmc`) over five seeds:
`random_then_grid_mean_best_<sampler>`, its spread (`_std_best_`) and each seed's best (`_bests_`);
`random_then_grid_mean_best` is the default sampler's (`sampler`).

`two_worker_speedup`: the wall time of the same random-then-grid search (same config, same plan, a fresh study,
`TIMED_EPOCHS` per trial so that a trial outlasts a worker's start-up: with the comparison's 6 epochs the 9-trial
plan took 30 s and ran out before the second worker began) with `search.n_jobs` 1 over its wall time with
`search.n_jobs` 2 (this process and one `tune-worker` process it
starts with TensorFlow's pools sized to its share of the cores, which loads TensorFlow and the split before its
first trial: that start-up is in the two-worker time). On an N-core machine it can be at most min(2, N), and the
plan's rounds bound it further: 9 trials in 5 rounds on two workers (the grid waits for the last random trial), at
most 1.8; docs/scale.md gives the measured bounds.
`load_average`: the 1-minute load average at the start of the two timed searches, since other work on the machine
skews the ratio.

`target_search_*` and `motions_target_search_*`: the searches under a board's limits of bench/boards.py (also
`make bench ARGS=boards` alone).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import ParameterGrid

from bench import boards
from pipelines.core import config as config_module
from pipelines.stages import clean, split, train
from pipelines.training import search, tuning

WORK = Path(__file__).parent / ".work" / "search"
PLAN = config_module.SearchConfig()  # the plan a user gets: the bench measures the defaults
BUDGET = PLAN.max_trials
SPACE = {"train.learning_rate": {"kind": "log_uniform", "low": 1e-5, "high": 1.0},
         "model.l2": {"kind": "log_uniform", "low": 1e-6, "high": 1.0}}


SEEDS = (0, 1, 2, 3, 4)
TIMED_EPOCHS = 24
SAMPLERS = ("random", "qmc")


def _best(trials: list[dict]) -> float:
    """The best validation accuracy among the finished trials (a diverged one has none)."""
    return max(trial["val/accuracy"] for trial in trials if "val/accuracy" in trial)


def _task(config_file: str, epochs: int, sampler: str) -> config_module.Config:
    tree = config_module.to_dict(config_module.load(config_file, [f"runtime.root={WORK}"]))
    tree["runtime"]["verbose"] = 0
    # the task the strategies have been compared on since the bench began: the plain model, no augmentation
    # (the digits preset's augmentation and batch normalization widen the good region the bench is about)
    tree["model"]["batch_norm"] = False
    tree["augment"]["transforms"] = []
    tree["train"].update({"optimizer": "sgd", "patience": 100, "objective": "accuracy", "threshold": "argmax",
                          "floors": {}})  # ranked by validation accuracy on both tasks
    tree["search"].update({"space": SPACE, "n_trials": PLAN.n_trials, "grid_points": PLAN.grid_points,
                           "top_k": PLAN.top_k, "max_trials": BUDGET, "epochs": epochs, "seed": 0,
                           "sampler": sampler})
    return config_module.from_dict(tree)


def _strategies(config: config_module.Config, prefix: str) -> dict:
    """Random-then-grid per sampler over SEEDS (mean, spread, each seed's best) and the exhaustive grid."""
    for stage in (clean, split, train):
        stage.run(config)
    figures, sizes = {}, []
    for sampler in SAMPLERS:
        bests = []
        for seed in SEEDS:
            job = tuning.Search(config_module.replace_path(config_module.replace_path(
                config, "search.sampler", sampler), "search.seed", seed))
            trials = tuning.search_trials(job, fresh=True)
            sizes.append(len(trials))
            bests.append(_best(trials))
        figures.update({f"{prefix}random_then_grid_mean_best_{sampler}": round(float(np.mean(bests)), 4),
                        f"{prefix}random_then_grid_std_best_{sampler}": round(float(np.std(bests)), 4),
                        f"{prefix}random_then_grid_bests_{sampler}": [round(value, 4) for value in bests]})
    # the default sampler's figures under the names
    figures[f"{prefix}random_then_grid_mean_best"] = figures[f"{prefix}random_then_grid_mean_best_"
                                                             f"{config.search.sampler}"]
    figures[f"{prefix}random_then_grid_trials"] = max(sizes)
    job = tuning.Search(config_module.replace_path(config, "search.max_trials", 0))
    study = job.study()
    study.set_user_attr("deadline", float("inf"))
    tuning.run_phase(job, study, "exhaustive", full_grid(config.search.space, 6))  # 36 >= 4 * BUDGET
    exhaustive = search.records(study, "val/accuracy", config.search.space)
    return {**figures, f"{prefix}grid_best": _best(exhaustive), f"{prefix}grid_trials": len(exhaustive)}


def run() -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    default = PLAN.sampler
    figures = _strategies(_task("configs/breast_cancer.yaml", 20, default), "table_")
    config = _task("configs/digits.yaml", 6, default)
    figures.update(_strategies(config, ""))
    best = _best(tuning.search_trials(tuning.Search(config), fresh=True))  # the default sampler and seed
    # the same search with longer trials, timed with one worker and with two
    timed = config_module.replace_path(config, "search.epochs", TIMED_EPOCHS)
    load = [os.getloadavg()[0]]
    started = time.perf_counter()
    chained = tuning.search_trials(tuning.Search(timed), fresh=True)
    chained_seconds = time.perf_counter() - started
    two_workers = config_module.replace_path(timed, "search.n_jobs", 2)
    load.append(os.getloadavg()[0])
    started = time.perf_counter()
    paired = tuning.search_trials(tuning.Search(two_workers), fresh=True)  # the same study name: afresh
    paired_seconds = time.perf_counter() - started
    return {**figures, "random_then_grid_best": best, "timed_search_best": _best(chained),
            "one_worker_seconds": round(chained_seconds, 1), "sampler": default,
            "two_worker_seconds": round(paired_seconds, 1), "two_worker_trials": len(paired),
            "two_worker_processes": len({trial["worker"] for trial in paired}),
            "two_worker_best": _best(paired),
            "two_worker_speedup": round(chained_seconds / paired_seconds, 2),
            "load_average": [round(value, 2) for value in load], **boards.run()}


def full_grid(space: dict[str, config_module.ParamSpace], points: int) -> list[dict]:
    """An exhaustive grid over the whole space (the benchmark's reference)."""
    grid = {path: list(param.values) if param.kind == "choice" else
            search.axis(param, param.low, param.high, points) for path, param in space.items()}
    return [{path: search.plain(value) for path, value in params.items()} for params in ParameterGrid(grid)]
