"""Search: random then grid, budgets, the median rule, resume after a kill, parallel trials, test unreachable."""

import numpy as np
import pytest

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.stages import clean, split, tune
from pipelines.training import fitting, search
from tests.conftest import tiny_config

SPACE = {"train.learning_rate": config_module.ParamSpace(kind="log_uniform", low=1e-4, high=1e-1),
         "model.dense_units": config_module.ParamSpace(kind="int", low=8, high=64),
         "train.optimizer": config_module.ParamSpace(kind="choice", values=("adam", "sgd"))}


def test_grid_spans_the_top_trials_region():
    top = [{"train.learning_rate": 1e-3, "model.dense_units": 10, "train.optimizer": "adam"},
           {"train.learning_rate": 1e-2, "model.dense_units": 20, "train.optimizer": "adam"}]
    grid = search.grid_around(SPACE, top, 3)
    rates = sorted({params["train.learning_rate"] for params in grid})
    assert rates == pytest.approx([1e-3, np.sqrt(1e-5), 1e-2])  # log-spaced for a log-uniform parameter
    assert sorted({params["model.dense_units"] for params in grid}) == [10, 15, 20]
    assert {params["train.optimizer"] for params in grid} == {"adam"} and len(grid) == 9
    top[1]["train.optimizer"] = "sgd"  # the top trials disagree: both stay
    assert {params["train.optimizer"] for params in search.grid_around(SPACE, top, 2)} == {"adam", "sgd"}


def test_median_rule_stops_a_trial_below_the_median_after_warmup():
    curves = [[0.5, 0.8, 0.9], [0.4, 0.7, 0.85], [0.6, 0.9, 0.95]]
    rule = search.median_rule(curves, fitting.objective("classification"), warmup=2)

    class Model:
        stop_training = False

    rule.set_model(Model())
    rule.on_epoch_end(0, {"val_accuracy": 0.1})  # warm-up: never pruned
    assert rule.pruned_at is None
    rule.on_epoch_end(1, {"val_accuracy": 0.75})  # median at epoch 2 is 0.8
    assert rule.pruned_at == 2 and rule.model.stop_training


def _fake_trial(calls, kill_after=None):
    def run_trial(tree, params, split_folder, digest, curves, warmup):
        if kill_after is not None and len(calls) == kill_after:
            raise KeyboardInterrupt("killed")
        calls.append(params)
        score = 1.0 - abs(np.log10(params["train.learning_rate"]) + 2.5)  # best near 10^-2.5
        return {"params": params, "val/accuracy": score, "val/loss": 1 - score, "curve": [score], "seconds": 0.0,
                "epochs": 1, "pruned_at": None}
    return run_trial


def _search_config(root, folds: int = 0, **search_settings):
    tree = config_module.to_dict(tiny_config(root))
    tree["split"]["folds"] = folds
    tree["search"].update({"space": {"train.learning_rate": {"kind": "log_uniform", "low": 1e-4, "high": 1e-1}},
                           **search_settings})
    return config_module.from_dict(tree)


def test_killed_search_resumes_without_redoing_finished_trials(tmp_path, monkeypatch, capsys):
    config = _search_config(tmp_path, n_trials=4, grid_points=4, top_k=2)
    ledger = search.Ledger(tmp_path / "ledger")
    calls = []
    monkeypatch.setattr(search, "run_trial", _fake_trial(calls, kill_after=3))
    with pytest.raises(KeyboardInterrupt):
        tune.search_trials(config, tmp_path, "digest", "val/accuracy", True, ledger)
    assert len(calls) == 3 and len(ledger.load()) == 3
    monkeypatch.setattr(search, "run_trial", _fake_trial(calls))
    trials = tune.search_trials(config, tmp_path, "digest", "val/accuracy", True, ledger)
    assert "3 trial(s) already finished in an interrupted run, not redone" in capsys.readouterr().out
    # three before the kill; after it, one random and the two inner grid points (the grid's ends are the top
    # two random trials themselves, which are not run again)
    assert len(calls) == 4 + 2
    assert [trial["phase"] for trial in trials].count("grid") == 2
    assert len({search.key(params) for params in calls}) == len(calls)  # no trial ran twice


def test_budget_caps_the_trials(tmp_path, monkeypatch, capsys):
    config = _search_config(tmp_path, n_trials=4, grid_points=6, max_trials=5)
    calls = []
    monkeypatch.setattr(search, "run_trial", _fake_trial(calls))
    trials = tune.search_trials(config, tmp_path, "digest", "val/accuracy", True, search.Ledger(tmp_path / "l"))
    assert len(calls) == len(trials) == 5
    assert "budget reached (5 trials" in capsys.readouterr().out


def test_real_search_in_parallel_never_reads_the_test_split(tmp_path, monkeypatch):
    config = _search_config(tmp_path, n_trials=2, grid_points=0, n_jobs=2, epochs=2)
    clean.run(config)
    split.run(config)
    real_load = workspace.load_arrays

    def guarded(folder, prefix, *names):
        assert prefix != "test", "the search read the test split"
        return real_load(folder, prefix, *names)

    monkeypatch.setattr(workspace, "load_arrays", guarded)
    folder = workspace.stage_dir(tmp_path, config.experiment, "split")
    trials = tune.search_trials(config, folder, "digest", "val/accuracy", True, search.Ledger(tmp_path / "l"))
    assert len(trials) == 2 and all(0 <= trial["val/accuracy"] <= 1 and trial["curve"] for trial in trials)
    # the same trial in this process, where the guard is active
    result = search.run_trial(config_module.to_dict(config), trials[0]["params"], str(folder), "digest", [], 0)
    assert result["epochs"] <= 2


def test_grid_runs_nearest_the_best_trial_first():
    space = {"train.learning_rate": SPACE["train.learning_rate"]}
    plan = [{"train.learning_rate": value} for value in (1e-4, 1e-3, 3e-3, 1e-1)]
    ordered = search.nearest_first(space, plan, {"train.learning_rate": 2e-3})
    assert [params["train.learning_rate"] for params in ordered] == [3e-3, 1e-3, 1e-4, 1e-1]


def test_cross_validated_objective_reports_mean_and_spread_over_the_folds(tmp_path):
    config = _search_config(tmp_path, folds=3, n_trials=1, objective="cv", epochs=1)
    clean.run(config)
    split.run(config)
    folder = workspace.stage_dir(tmp_path, config.experiment, "split")
    result = search.run_trial(config_module.to_dict(config), {"train.learning_rate": 1e-3}, str(folder), "d", [], 0)
    assert len(result["fold_scores"]) == 3
    assert result["val/accuracy"] == pytest.approx(np.mean(result["fold_scores"]))
    assert result["spread"] == pytest.approx(np.std(result["fold_scores"]))


def test_augmentation_strength_scales_every_probability():
    from pipelines.data import augment

    settings = config_module.AugmentConfig(transforms=({"name": "HorizontalFlip"}, {"name": "Blur", "p": 0.8}),
                                           strength=1.5)
    compose = augment.build(settings)
    assert [transform.p for transform in compose.transforms] == [0.75, 1.0]
