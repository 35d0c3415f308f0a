"""Hyperparameter search: random sampling first, then a grid around the best region, on validation data only.

Sampling and grids come from scikit-learn (`ParameterSampler`, `ParameterGrid`); parallel trials from joblib.
This module holds the parts that do not touch MLflow: the trial plan, the median pruning rule, the resumable
trial ledger, and the trial itself (which reads only the training side of the split).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import tf_keras as keras
from scipy import stats
from sklearn.model_selection import ParameterGrid, ParameterSampler

from pipelines.core import config as config_module
from pipelines.data import splits
from pipelines.training import fitting, recipes


def distributions(space: dict[str, config_module.ParamSpace]) -> dict:
    """search.space -> what ParameterSampler samples from."""
    converted = {}
    for path, param in space.items():
        if param.kind == "log_uniform":
            converted[path] = stats.loguniform(param.low, param.high)
        elif param.kind == "uniform":
            converted[path] = stats.uniform(param.low, param.high - param.low)
        elif param.kind == "int":
            converted[path] = stats.randint(int(param.low), int(param.high) + 1)
        else:
            converted[path] = list(param.values)
    return converted


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def sample(space: dict[str, config_module.ParamSpace], count: int, seed: int) -> list[dict]:
    """Phase 1: `count` random parameter sets, as plain Python values."""
    sampler = ParameterSampler(distributions(space), n_iter=count, random_state=seed)
    return [{path: _plain(value) for path, value in params.items()} for params in sampler]


def axis(param: config_module.ParamSpace, low: float, high: float, points: int) -> list:
    """`points` values from low to high, log-spaced for log_uniform, whole numbers for int."""
    if points == 1 or low == high:
        return [_plain(low) if param.kind != "int" else int(round(low))]
    values = np.geomspace(low, high, points) if param.kind == "log_uniform" else np.linspace(low, high, points)
    if param.kind == "int":
        return sorted({int(round(value)) for value in values})
    return [float(value) for value in values]


def grid_around(space: dict[str, config_module.ParamSpace], top: list[dict], points: int) -> list[dict]:
    """Phase 2: a grid over the region the top trials span.

    Numeric parameters get `points` values across [min, max] of the top trials; a categorical parameter is
    fixed to the top trials' value when they agree, and keeps the values they used when they disagree.
    """
    grid = {}
    for path, param in space.items():
        seen = [trial[path] for trial in top]
        if param.kind == "choice":
            grid[path] = sorted(set(seen), key=seen.index)
        else:
            grid[path] = axis(param, min(seen), max(seen), points)
    return [{path: _plain(value) for path, value in params.items()} for params in ParameterGrid(grid)]


def nearest_first(space: dict[str, config_module.ParamSpace], plan: list[dict], best: dict) -> list[dict]:
    """The grid ordered by distance to the best trial (log scale where the distribution is, each parameter
    divided by its range), so that a budget cut keeps the points nearest the best region."""
    def coordinate(path: str, value) -> float:
        param = space[path]
        if param.kind == "choice":
            return 0.0 if value == best[path] else 1.0
        scale = np.log10 if param.kind == "log_uniform" else (lambda number: number)
        return (scale(value) - scale(best[path])) / max(scale(param.high) - scale(param.low), 1e-12)

    return sorted(plan, key=lambda params: sum(coordinate(path, params[path]) ** 2 for path in params))


def full_grid(space: dict[str, config_module.ParamSpace], points: int) -> list[dict]:
    """An exhaustive grid over the whole space (the benchmark's reference)."""
    grid = {path: list(param.values) if param.kind == "choice" else axis(param, param.low, param.high, points)
            for path, param in space.items()}
    return [{path: _plain(value) for path, value in params.items()} for params in ParameterGrid(grid)]


def key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


class Ledger:
    """Finished trials, one JSON line each, in a folder that survives a killed search (resume)."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / "trials.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        trials = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return {f"{trial['phase']}:{key(trial['params'])}": trial for trial in trials}

    def append(self, trial: dict) -> None:
        with open(self.path, "a") as stream:  # one line per finished trial; a torn last line is ignored
            stream.write(json.dumps(trial, sort_keys=True) + "\n")


def median_rule(previous_curves: list[list[float]], objective: fitting.Objective, warmup: int):
    """A Keras callback that stops a trial whose validation objective after `warmup` epochs is worse than the
    median of the earlier trials' objectives at the same epoch (the median stopping rule)."""

    class MedianStop(keras.callbacks.Callback):
        pruned_at = None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(objective.log_name)
            others = [curve[epoch] for curve in previous_curves if len(curve) > epoch]
            if value is None or epoch + 1 < warmup or len(others) < 2:
                return
            median = float(np.median(others))
            if (value < median) if objective.higher else (value > median):
                self.pruned_at = epoch + 1
                self.model.stop_training = True

    return MedianStop()


def run_trial(config_tree: dict, params: dict, split_folder: str, split_digest: str, previous_curves: list,
              prune_warmup: int) -> dict:
    """Trains one trial on the training split and scores it on validation (or k folds of train+val).

    Runs in a worker process under joblib, so it takes and returns plain data.
    """
    config = config_module.from_dict(config_tree)
    for path, value in params.items():
        config = config_module.replace_path(config, path, value)
    config = config_module.replace_path(config, "train.epochs", config.search.epochs)
    data = splits.load_split(Path(split_folder))  # train and val only: the test split is never read here
    objective = fitting.objective(data.task)
    started, wall = time.perf_counter(), time.time()
    if config.search.objective == "cv":
        scores = [recipes.fit_model(config, fold, split_digest, log_to_mlflow=False)[2][objective.key]
                  for fold in splits.fold_views(Path(split_folder), data)]
        return {"params": params, objective.key: float(np.mean(scores)), "spread": float(np.std(scores)),
                "fold_scores": scores, "curve": [], "pruned_at": None, "seconds": time.perf_counter() - started,
                "started": wall}
    rule = median_rule(previous_curves, objective, prune_warmup) if prune_warmup else None
    try:
        _, history, result = recipes.fit_model(config, data, split_digest, log_to_mlflow=False,
                                               callbacks=[rule] if rule else None)
    except fitting.TrainingDiverged as error:  # a legitimate outcome of a bad region: the worst score
        return {"params": params, objective.key: objective.worst(), "val/loss": float("inf"),
                "epochs": 0, "curve": [], "pruned_at": None, "diverged": str(error),
                "seconds": time.perf_counter() - started, "started": wall}
    return {"params": params, objective.key: result[objective.key], "val/loss": result["val/loss"],
            "epochs": result["epochs"], "curve": [float(value) for value in history.get(objective.log_name, [])],
            "pruned_at": rule.pruned_at if rule else None, "seconds": time.perf_counter() - started, "started": wall}
