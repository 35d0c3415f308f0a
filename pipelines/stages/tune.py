"""tune: random search first, then a grid around the best region, on validation data only.

Phase 1 samples `search.n_trials` parameter sets from `search.space` (scikit-learn's ParameterSampler).
Phase 2 spans a grid (`ParameterGrid`, `search.grid_points` values per numeric parameter, log-spaced where
the distribution is) over the region of the `search.top_k` best random trials, nearest the best trial first.
The objective is the validation metric, or the mean and spread over k folds of train+val
(`search.objective: cv`); the test split is never read. Budgets: `search.max_trials` and
`search.max_seconds`; `search.prune_warmup` stops unpromising trials by the median rule. Trials run in
`search.n_jobs` processes (joblib); every finished trial is appended to a ledger that survives a kill, so a
rerun continues without redoing them. Each trial is a nested MLflow run. The best configuration is written to
`best_config.yaml`, trained in full and registered; it becomes `champion` if it beats the champion on the
same split (the one rule of pipelines/training/champion.py).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import yaml
from joblib import Parallel, delayed

from pipelines.core import config as config_module
from pipelines.core import figures, stage, tracking, workspace
from pipelines.data import splits
from pipelines.training import champion, fitting, recipes, search


def apply(config: config_module.Config, params: dict) -> config_module.Config:
    for path, value in params.items():
        config = config_module.replace_path(config, path, value)
    return config


def sample(settings: config_module.SearchConfig) -> list[dict]:
    return search.sample(settings.space, settings.n_trials, settings.seed)


def _log_trial(config: config_module.Config, trial: dict, key: str) -> str:
    """One nested MLflow run per trial: params, the validation curve, the result, phase, time, pruning."""
    tags = {"phase": trial["phase"], "pruned": str(bool(trial.get("pruned_at"))).lower(),
            "resumed": str(trial.get("resumed", False)).lower(), "diverged": str("diverged" in trial).lower()}
    span = (trial["started"], trial["started"] + trial["seconds"]) if "started" in trial else None
    with tracking.run(apply(config, trial["params"]), f"trial-{trial['number']}", tags=tags, span=span) as active:
        mlflow.log_params({f"trial.{path}": value for path, value in trial["params"].items()})
        curve = trial.get("curve", [])
        for epoch, value in enumerate(curve):
            mlflow.log_metric(key, value, step=epoch)
        final = {key: trial[key], "trial/seconds": trial["seconds"]}
        final.update({name: trial[name] for name in ("val/loss", "spread", "epochs") if name in trial})
        if trial.get("pruned_at"):
            final["trial/pruned_at_epoch"] = trial["pruned_at"]
        # After the curve's last step, so that the runs table (which shows the latest step) shows the result.
        tracking.log_metrics({name: value for name, value in final.items() if math.isfinite(value)},
                             step=len(curve))
        return active.info.run_id


def run_phase(config, phase: str, plan: list[dict], ledger: search.Ledger, done: dict, budget: dict,
              split_folder: Path, digest: str, key: str) -> list[dict]:
    """Runs the planned trials not in the ledger yet, `n_jobs` at a time, within the budget."""
    settings, results = config.search, []
    pending = []
    for params in plan:
        previous = done.get(f"{phase}:{search.key(params)}")
        if previous:
            results.append({**previous, "resumed": True})
        else:
            pending.append(params)
    if results:
        print(f"[tune] {phase}: {len(results)} trial(s) already finished in an interrupted run, not redone")
    tree = config_module.to_dict(config)
    while pending:
        room = budget["trials"] - budget["used"] if settings.max_trials else len(pending)
        if room <= 0 or (settings.max_seconds and time.monotonic() - budget["started"] > settings.max_seconds):
            print(f"[tune] budget reached ({budget['used']} trials, {time.monotonic() - budget['started']:.0f}s): "
                  f"{len(pending)} planned {phase} trial(s) not run")
            break
        batch, pending = pending[:min(settings.n_jobs, room)], pending[min(settings.n_jobs, room):]
        curves = [trial["curve"] for trial in results if trial.get("curve")]
        finished = Parallel(n_jobs=len(batch))(
            delayed(search.run_trial)(tree, params, str(split_folder), digest, curves, settings.prune_warmup)
            for params in batch) if len(batch) > 1 else [
            search.run_trial(tree, batch[0], str(split_folder), digest, curves, settings.prune_warmup)]
        for trial in finished:
            trial.update({"phase": phase, "number": budget["used"]})
            budget["used"] += 1
            ledger.append(trial)
            if trial.get("pruned_at"):
                print(f"[tune] trial {trial['number']} pruned at epoch {trial['pruned_at']} (median rule)")
            if trial.get("diverged"):
                print(f"[tune] trial {trial['number']} diverged: {trial['diverged']}")
            results.append(trial)
    for trial in results:
        trial["run_id"] = _log_trial(config, trial, key)
    return results


def _plot(trials: list[dict], baseline: dict, key: str, path: Path) -> None:
    names = sorted(trials[0]["params"]) if trials else []
    figure, axes = plt.subplots(1, max(len(names), 1), figsize=(4 * max(len(names), 1), 3.2), squeeze=False)
    for axis, name in zip(axes[0], names):
        for phase, marker in (("random", "o"), ("grid", "x")):
            chosen = [trial for trial in trials if trial["phase"] == phase]
            if not chosen:  # no legend entry for a phase that did not run
                continue
            axis.scatter([trial["params"][name] for trial in chosen], [trial[key] for trial in chosen],
                         marker=marker, label=f"{phase} trials")
        axis.axhline(baseline[key], color="grey", linestyle="--", label="train stage")
        values = [trial["params"][name] for trial in trials]
        if all(isinstance(value, float) and value > 0 for value in values) and max(values) / min(values) > 20:
            axis.set_xscale("log")
        axis.set(xlabel=name, ylabel=key)
        axis.legend(fontsize=7)
    figures.save(figure, path)


def search_trials(config, split_folder: Path, digest: str, key: str, higher: bool, ledger: search.Ledger) -> list:
    """Both phases; returns every trial (finished now or earlier)."""
    done = ledger.load()
    budget = {"trials": config.search.max_trials, "used": 0, "started": time.monotonic()}
    trials = run_phase(config, "random", sample(config.search), ledger, done, budget, split_folder, digest, key)
    if config.search.grid_points and trials:
        ranked = sorted(trials, key=lambda trial: trial[key], reverse=higher)[: config.search.top_k]
        plan = search.grid_around(config.search.space, [trial["params"] for trial in ranked],
                                  config.search.grid_points)
        tried = {search.key(trial["params"]) for trial in trials}
        plan = search.nearest_first(config.search.space, [params for params in plan if search.key(params) not in
                                                          tried], ranked[0]["params"])
        trials += run_phase(config, "grid", plan, ledger, done, budget, split_folder, digest, key)
    return trials


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Searches on validation data; the best configuration's model becomes `champion` if it beats it."""
    split_folder, _ = stage.upstream(config, "split", "tune")
    train_folder, train_manifest = stage.upstream(config, "train", "tune")
    inputs = {"split": stage.manifest_digest(split_folder), "train": stage.manifest_digest(train_folder)}
    sections = (*recipes.SECTIONS, "search")
    ledger = search.Ledger(stage.backup_dir(config, "tune", stage.fingerprint(config, "tune", sections, inputs)))

    def body(folder: Path) -> dict:
        data = splits.load_split(split_folder)
        objective = fitting.objective(data.task)
        key, higher = objective.key, objective.higher
        baseline = {name: train_manifest["metrics"][name] for name in (key, "val/loss")}
        trials = search_trials(config, split_folder, inputs["split"], key, higher, ledger)
        ranked = sorted(trials, key=lambda trial: trial[key], reverse=higher)
        best = ranked[0] if ranked else None
        best_params = best["params"] if best else {}
        best_config, final = apply(config, best_params), None
        if best:  # the best configuration, trained with the full epoch budget; the champion rule decides
            with tracking.run(best_config, "best", tags={"phase": "final"}):
                model, history, final = recipes.fit_model(best_config, data, inputs["split"])
                tracking.log_metrics({key: final[key], "val/loss": final["val/loss"]}, step=len(history["loss"]))
                champion.register(best_config, model, final, inputs["split"], data.task, data.x["val"][:2])
        version = tracking.champion_version(config)
        workspace.write_text(folder / "best_config.yaml",
                             yaml.safe_dump(config_module.to_dict(best_config), sort_keys=False))
        workspace.write_json(folder / "trials.json", {"baseline": baseline, "trials": trials, "final": final,
                                                      "champion_version": version})
        _plot(trials, baseline, key, folder / "trials.png")
        for name in ("best_config.yaml", "trials.json", "trials.png"):
            mlflow.log_artifact(str(folder / name))
        mlflow.log_params({f"best.{path}": value for path, value in best_params.items()})
        name = objective.metric
        metrics = {f"tune/best_trial_val_{name}": best[key] if best else baseline[key],
                   f"tune/baseline_val_{name}": baseline[key], "tune/trials": len(trials),
                   "tune/grid_trials": sum(trial["phase"] == "grid" for trial in trials),
                   "tune/pruned": sum(bool(trial.get("pruned_at")) for trial in trials)}
        if final:
            metrics[f"tune/final_val_{name}"] = final[key]
        tracking.log_metrics(metrics)
        shutil.rmtree(ledger.path.parent, ignore_errors=True)  # finished: a forced rerun searches afresh
        return {**metrics, "model_version": version}

    return stage.execute(
        config, "tune", sections, inputs, body, force,
        still_valid=lambda manifest: tracking.champion_version(config) == manifest["metrics"]["model_version"])
