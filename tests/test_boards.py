"""Search under a board's limits: feasibility, the Pareto front, each board's champion (training/boards.py)."""

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


def test_phase_two_refines_around_the_best_trials_and_around_each_board_s_best_feasible_ones():
    from pipelines.training import search, tuning

    trials = [{**trial, "phase": "random",
               "boards": {name.replace("/m4/", "/cortex_m4/"): value for name, value in trial["boards"].items()}}
              for trial in TRIALS]
    board = config_module.from_dict({"search": {"top_k": 2, "targets": [{"preset": "cortex_m4", "deadline_ms": 5}]}})
    regions = tuning.grid_regions(trials, board, KEY, higher=True)
    assert [[trial["number"] for trial in region] for region in regions] == [[0, 1], [1, 2]]
    alone = config_module.from_dict({"search": {"top_k": 2}})
    regions = tuning.grid_regions(trials, alone, KEY, higher=True)
    assert [[trial["number"] for trial in region] for region in regions] == [[0, 1]]
    # a lone feasible trial spans no region: the board's fastest infeasible trial joins it
    lone = [trial for trial in trials if trial["number"] in (0, 1)] + [
        {**trials[0], "number": 5, KEY: 0.98, "boards": {**trials[0]["boards"], "board/cortex_m4/latency_ms": 6.0}}]
    regions = tuning.grid_regions(lone, board, KEY, higher=True)
    assert [[trial["number"] for trial in region] for region in regions] == [[0, 5], [1, 5]]
    none = [trial for trial in trials if trial["number"] == 0]  # nothing feasible: no board group
    assert [[trial["number"] for trial in region] for region in tuning.grid_regions(none, board, KEY, True)] == [[0]]
    a, b, c, d = ({"model.dense_units": units} for units in (1, 2, 3, 4))
    assert search.in_turn([[a, b, c], [b, d]]) == [a, b, d, c]  # each region's nearest first, no point twice


def test_search_targets_are_checked_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"search.targets\[0\]: unknown target 'cortex_m99'"):
        config_module.from_dict({"search": {"targets": ["cortex_m99"]}})
    with pytest.raises(ConfigError, match="search.targets: measures each trial's model"):
        config_module.from_dict({"split": {"folds": 3}, "search": {"targets": ["cortex_m4"], "objective": "cv"}})


@pytest.mark.slow
def test_a_search_under_board_limits_gives_each_board_its_most_accurate_feasible_trial(tmp_path, capsys):
    from pipelines.core import tracking, workspace
    from pipelines.stages import clean, split, train, tune
    from pipelines.training import tuning
    from tests.conftest import tiny_config

    tree = config_module.to_dict(tiny_config(tmp_path))
    tree["search"].update({"n_trials": 2, "grid_points": 0, "epochs": 2, "seed": 0,
                           "space": {"model.filters": {"kind": "choice", "values": [[4], [32]]}},
                           # nothing finishes in a nanosecond; a Cortex-M7 without a deadline takes any that fits
                           "targets": [{"preset": "cortex_m4", "deadline_ms": 1e-6}, "cortex_m7"]})
    config = config_module.from_dict(tree)
    for stage in (clean, split, train):
        stage.run(config)
    tune.run(config)
    out = capsys.readouterr().out
    folder = workspace.stage_dir(tmp_path, config.experiment, "tune")
    rows = workspace.read_json(folder / "pareto.json")["rows"]
    assert (folder / "pareto.png").stat().st_size > 0
    assert sorted((row["board"], row["trial"]) for row in rows) == [("cortex_m4", 0), ("cortex_m4", 1),
                                                                     ("cortex_m7", 0), ("cortex_m7", 1)]
    assert all(row["latency_ms"] > 0 and row["ram_bytes"] > 0 for row in rows)  # measured and estimated
    assert not any(row["feasible"] for row in rows if row["board"] == "cortex_m4")
    assert "no trial fits cortex_m4 and meets its deadline: no champion-cortex_m4" in out
    assert tracking.champion_version(config, "champion-cortex_m4") is None
    m7 = [row for row in rows if row["board"] == "cortex_m7"]
    assert all(row["feasible"] for row in m7)
    best = max(m7, key=lambda row: row[KEY])
    assert f"[tune] champion-cortex_m7: trial {best['trial']} " in out
    assert tracking.champion_version(config, "champion-cortex_m7") is not None
    study = tuning.Search(config).study()  # Optuna holds each board's excesses as the trial's constraints
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        constraints = {key: value for key, value in trial.system_attrs.items() if key.startswith("constraints:")}
        assert constraints["constraints:board/cortex_m4/deadline_excess"] > 0
        assert constraints["constraints:board/cortex_m7/ram_excess"] < 0


@pytest.mark.slow
def test_export_bundles_a_board_s_own_champion_for_that_board_through_the_same_gates(tmp_path):
    import numpy as np
    import tf_keras as keras

    from pipelines.core import tracking, workspace
    from pipelines.data import splits
    from pipelines.stages import clean, export, split, train
    from pipelines.training import champion
    from tests.conftest import tiny_config

    config = tiny_config(tmp_path, "export.targets=[cortex_m7]", "export.variants=[int8]")
    for stage in (clean, split, train):
        stage.run(config)
    main = tracking.champion_version(config)
    folder = workspace.stage_dir(tmp_path, config.experiment, "split")
    example = splits.split_items(folder, "val").head(2)
    with tracking.run(config, "board"):  # what tune's search under cortex_m7's limits registers
        board, promoted = champion.register(config, tracking.load_champion(config, main),
                                            {"val/accuracy": 0.5, "val/loss": 1.0}, splits.identity(folder),
                                            "classification", example, alias="champion-cortex_m7")
    assert promoted and board != main and tracking.champion_version(config) == main
    export.run(config)
    bundle = workspace.bundle_dir(tmp_path, config.experiment)
    assert str(workspace.read_json(bundle / "metadata.json")["source"]["version"]) == main
    assert str(workspace.read_json(bundle / "cortex_m7" / "metadata.json")["source"]["version"]) == board
    stage_folder = workspace.stage_dir(tmp_path, config.experiment, "export")
    assert f"| cortex_m7 (champion-cortex_m7 version {board}) |" in (stage_folder / "fit_table.md").read_text()
    assert (stage_folder / "cortex_m7" / "int8.tflite").is_file()

    # a board champion that fails the gates (always the first class) reaches no bundle; the main one still does
    shape = tuple(splits.split_items(folder, "val").shape[1:])
    inputs = keras.Input(shape)
    out = keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant([5.0] + [0.0] * 9))(
        keras.layers.Flatten()(inputs))
    with tracking.run(config, "constant"):
        constant, promoted = champion.register(config, keras.Model(inputs, out),
                                               {"val/accuracy": 1.0, "val/loss": 0.0}, splits.identity(folder),
                                               "classification", np.asarray(example), alias="champion-cortex_m7")
    assert promoted
    export.run(config)  # the board champion is one of export's inputs: it runs again
    assert not (bundle / "cortex_m7").exists() and (bundle / "model.tflite").is_file()
    table = workspace.read_json(stage_folder / "export_table.json")
    assert table["targets"]["cortex_m7"]["chosen"] is None
    assert table["targets"]["cortex_m7"]["why"].startswith(f"champion-cortex_m7 version {constant} fails its gates")
    assert tracking.version_tags(config, constant)["blessed"] == "false"
