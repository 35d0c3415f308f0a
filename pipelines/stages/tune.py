"""tune: random search first, then a grid around the best region, on validation data only, on Optuna.

Phase 1 samples `search.n_trials` parameter sets from `search.space` (`search.sampler`: Optuna's seeded
QMCSampler on a scrambled Sobol sequence by default, or its RandomSampler).
Phase 2 spans a grid (`search.grid_points` values per numeric parameter, log-spaced where the distribution is)
over the region of the `search.top_k` best random trials, nearest the best trial first; with `search.targets`, also
over each board's `top_k` best feasible ones (fit and deadline), the regions' points taken in turn. The search
(pipelines/training/tuning.py, on Optuna in search.py) plans each phase in an Optuna study (enqueued trials, each
handed out once) and works on it with `search.n_jobs - 1` local worker processes besides this one;
`make tune-worker` joins from another shell or machine that sees the same workspace and storage (`search.storage`).
The objective is the validation metric, or the mean and spread over k folds of
train+val (`search.objective: cv`); the test split is never read. Budgets: `search.max_trials` and
`search.max_seconds`; `search.prune_warmup` prunes by Optuna's MedianPruner. A killed search keeps its finished
trials in the study, and a rerun continues it. Each trial is a nested MLflow run. The best configuration is
written to `best_config.yaml`, trained in full and registered; it becomes `champion` if it beats the champion on
the same split (the one rule of pipelines/training/champion.py).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import yaml

from pipelines.core import config as config_module
from pipelines.core import stage, tracking, workspace
from pipelines.data import splits
from pipelines.training import boards, champion, recipes, tuning


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Searches on validation data; the best configuration's model becomes `champion` if it beats it."""
    job = tuning.Search(config)

    def body(folder: Path) -> dict:
        data = splits.load_split(job.split_folder, in_memory_mb=config.runtime.in_memory_mb)
        key, higher = job.objective.key, job.objective.higher
        baseline = {name: job.train_manifest["metrics"][name] for name in (key, "val/loss")}
        trials = tuning.search_trials(job, fresh=force)
        ranked = sorted([trial for trial in trials if trial["state"] == "complete"], key=lambda trial: trial[key],
                        reverse=higher)
        best = ranked[0] if ranked else None
        best_params = best["params"] if best else {}
        best_config, final = tuning.apply(config, best_params), None
        if best:  # the best configuration, trained with the full epoch budget; the champion rule decides
            with tracking.run(best_config, "best", tags={"phase": "final"}):
                model, history, final = recipes.fit_model(best_config, data, job.split_id)
                tracking.log_metrics({key: final[key], "val/loss": final["val/loss"]}, step=len(history["loss"]))
                best_version, _ = champion.register(best_config, model, final, job.split_id, data.task,
                                                    data.x["val"].head(2))
        for trial in trials:
            trial["run_id"] = tuning.log_trial(config, trial, key)
        version = tracking.champion_version(config)
        workspace.write_text(folder / "best_config.yaml",
                             yaml.safe_dump(config_module.to_dict(best_config), sort_keys=False))
        workspace.write_json(folder / "trials.json", {"baseline": baseline, "trials": trials, "final": final,
                                                      "champion_version": version, "study": job.name,
                                                      "storage": job.url})
        tuning.plot(trials, baseline, key, folder / "trials.png")
        for name in ("best_config.yaml", "trials.json", "trials.png"):
            mlflow.log_artifact(str(folder / name))
        mlflow.log_params({f"best.{path}": value for path, value in best_params.items()})
        mlflow.set_tags({"optuna_study": job.name})
        name = job.objective.metric
        metrics = {f"tune/best_trial_val_{name}": best[key] if best else baseline[key],
                   f"tune/baseline_val_{name}": baseline[key], "tune/trials": len(trials),
                   "tune/grid_trials": sum(trial["phase"] == "grid" for trial in trials),
                   "tune/pruned": sum(trial["state"] == "pruned" for trial in trials)}
        if final:
            metrics[f"tune/final_val_{name}"] = final[key]
        if config.search.targets:  # each board's front and champion (pipelines/training/boards.py)
            metrics.update(boards.crown(config, trials, data, job.split_id, key, higher, folder,
                                        (best_params, best_version, final) if final else None))
        tracking.log_metrics(metrics)
        return {**metrics, "model_version": version}

    return stage.execute(
        config, "tune", tuning.SECTIONS, job.inputs, body, force,
        still_valid=lambda manifest: tracking.champion_version(config) == manifest["metrics"]["model_version"])
