"""tune: random search over `search.space` on validation data; the best model becomes the champion.

Sampling and trial bookkeeping come from scikit-learn's ParameterSampler. Each trial is a nested MLflow run.
The trained model from the train stage is the baseline: a trial must beat its validation score (accuracy, or
MAE for regression) to take the `champion` alias. The winning configuration is written out as `best_config.yaml`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import yaml
from scipy import stats
from sklearn.model_selection import ParameterSampler

from pipelines import config as config_module
from pipelines import fitting, stage, tracking, train, workspace


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


def sample(search: config_module.SearchConfig) -> list[dict]:
    """The random trials' parameters, as plain Python values."""
    sampler = ParameterSampler(distributions(search.space), n_iter=search.n_trials, random_state=search.seed)
    return [{path: value.item() if isinstance(value, np.generic) else value for path, value in params.items()}
            for params in sampler]


def apply(config: config_module.Config, params: dict) -> config_module.Config:
    for path, value in params.items():
        config = config_module.replace_path(config, path, value)
    return config


def _plot(trials: list[dict], baseline: dict, key: str, path: Path) -> None:
    names = sorted(trials[0]["params"]) if trials else []
    figure, axes = plt.subplots(1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        values = [trial["params"][name] for trial in trials]
        axis.scatter(values, [trial[key] for trial in trials], label="random trials")
        axis.axhline(baseline[key], color="grey", linestyle="--", label="train stage")
        axis.set(xlabel=name, ylabel=key)
        if all(isinstance(value, float) and value > 0 for value in values) and max(values) / min(values) > 20:
            axis.set_xscale("log")
        axis.legend(fontsize=7)
    figure.tight_layout()
    with workspace.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Runs the random search on validation data and moves `champion` to the best model."""
    split_folder, _ = stage.upstream(config, "split", "tune")
    train_folder, train_manifest = stage.upstream(config, "train", "tune")

    def body(folder: Path) -> dict:
        data = fitting.load_split(split_folder)
        key = fitting.objective(data.task)[0]
        baseline = {name: train_manifest["metrics"][name] for name in (key, "val/loss")}
        best, best_model, best_run_id, trials = dict(baseline, params={}), None, None, []
        for number, params in enumerate(sample(config.search)):
            trial_config = apply(config, params)
            with tracking.run(trial_config, f"trial-{number}", tags={"phase": "random"}) as active:
                mlflow.log_params({f"trial.{path}": value for path, value in params.items()})
                short = config_module.replace_path(trial_config, "train.epochs", config.search.epochs)
                model, _, scores = train.fit_model(short, data, stage.manifest_digest(split_folder))
                tracking.log_metrics({key: scores[key], "val/loss": scores["val/loss"],
                                      "trial/epochs": scores["epochs"], "trial/seconds": scores["fit_seconds"]})
            trial = {"number": number, "params": params, "run_id": active.info.run_id, **scores}
            trials.append(trial)
            if fitting.better(trial, best, data.task):
                best, best_model, best_run_id = trial, model, active.info.run_id
        version = train_manifest["metrics"]["model_version"]
        if best_model is not None:
            with mlflow.start_run(run_id=best_run_id, nested=True):
                version = tracking.register(config, fitting.log_keras_model(best_model), make_champion=True)
        else:
            tracking.set_champion(config, version)
        best_config = config_module.to_dict(apply(config, best["params"]))
        workspace.write_text(folder / "best_config.yaml", yaml.safe_dump(best_config, sort_keys=False))
        workspace.write_json(folder / "trials.json", {"baseline": baseline, "trials": trials,
                                                      "champion_version": version})
        _plot(trials, baseline, key, folder / "trials.png")
        for name in ("best_config.yaml", "trials.json", "trials.png"):
            mlflow.log_artifact(str(folder / name))
        mlflow.log_params({f"best.{path}": value for path, value in best["params"].items()})
        name = key.split("/")[1]
        metrics = {f"tune/best_val_{name}": best[key], f"tune/baseline_val_{name}": baseline[key],
                   "tune/trials": len(trials)}
        tracking.log_metrics(metrics)
        return {**metrics, "model_version": version}

    inputs = {"split": stage.manifest_digest(split_folder), "train": stage.manifest_digest(train_folder)}
    return stage.execute(
        config, "tune", (*train.SECTIONS, "search"), inputs, body, force,
        still_valid=lambda manifest: tracking.champion_version(config) == manifest["metrics"]["model_version"])
