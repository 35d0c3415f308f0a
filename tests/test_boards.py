"""Search under a board's limits: feasibility, the Pareto front, each board's champion (pipelines/training/boards.py)."""

import optuna
import pytest

from pipelines.core import config as config_module
from pipelines.core.errors import ConfigError
from pipelines.training import boards

KEY = "val/accuracy"


def _trial(number, accuracy, ms, ram, feasible, state="complete"):
    return {"number": number, "state": state, KEY: accuracy, "params": {"model.dense_units": number},
            "boards": {"board/m4/latency_ms": ms, "board/m4/ram_bytes": ram, "board/m4/flash_bytes": 1000,
                       "board/m4/fits": True, "board/m4/meets_deadline": feasible, "board/m4/feasible": feasible}}


TRIALS = [_trial(0, 0.99, 9.0, 50_000, False),  # the most accurate, too slow
          _trial(1, 0.97, 4.0, 30_000, True),   # the board's champion
          _trial(2, 0.96, 4.5, 40_000, True),   # dominated by 1 on all three
          _trial(3, 0.90, 1.0, 20_000, True),   # fastest and smallest: on the front
          _trial(4, 0.995, 1.0, 10_000, True, state="pruned")]  # pruned: never a champion, not on the front


def test_the_champion_is_the_most_accurate_trial_that_is_feasible_on_the_board():
    assert boards.champion_trial(TRIALS, "m4", KEY, higher=True)["number"] == 1
    assert boards.champion_trial(TRIALS, "other", KEY, higher=True) is None
    lower = [{**trial, "val/mae": 1 - trial[KEY]} for trial in TRIALS]
    assert boards.champion_trial(lower, "m4", "val/mae", higher=False)["number"] == 1


def test_the_front_holds_the_trials_no_other_beats_on_accuracy_latency_and_ram():
    assert boards.front(TRIALS, "m4", KEY, higher=True) == [0, 1, 3]
    rows = boards.table(TRIALS, ["m4"], KEY, higher=True)
    assert [(row["trial"], row["pareto"], row["feasible"]) for row in rows] == [
        (0, True, False), (1, True, True), (2, False, True), (3, True, True), (4, False, True)]


def test_optunas_constraints_mark_a_trial_feasible_when_some_board_takes_it():
    func = boards.constraints(["m4", "m7"])

    def frozen(attrs):
        return optuna.trial.create_trial(value=0.5, user_attrs=attrs)

    assert func(frozen({"board/m4/feasible": False, "board/m7/feasible": True})) == [0.0]
    assert func(frozen({"board/m4/feasible": False, "board/m7/feasible": False})) == [1.0]
    assert func(frozen({})) == [1.0]  # pruned before it was measured


def test_search_targets_are_checked_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"search.targets\[0\]: unknown target 'cortex_m99'"):
        config_module.from_dict({"search": {"targets": ["cortex_m99"]}})
    with pytest.raises(ConfigError, match="search.targets: measures each trial's model"):
        config_module.from_dict({"split": {"folds": 3}, "search": {"targets": ["cortex_m4"], "objective": "cv"}})
