"""Quality gates: a model that answers one class, or loses to a classical model on the same training split, is
not bundled unless asked, and says which check it failed."""

import numpy as np
import pytest
import tf_keras as keras

from pipelines.core import config as config_module
from pipelines.core import tracking, workspace
from pipelines.core.errors import StageError
from pipelines.data import readers, splits
from pipelines.stages import clean, export, split, train
from pipelines.training import champion, gates
from tests.conftest import tiny_config


def _data(y_train, y_val, task="classification", names=("a", "b", "c")):
    x = {"train": readers.ArrayReader(np.zeros((len(y_train), 2), np.float32)),
         "val": readers.ArrayReader(np.zeros((len(y_val), 2), np.float32))}
    return splits.SplitData(x, {"train": np.asarray(y_train), "val": np.asarray(y_val)},
                            {"task": task, "class_names": list(names)}, {})


def test_the_majority_predictor_and_a_classical_baseline_are_beaten_or_the_model_is_not_blessed():
    config = config_module.load(None, [])  # the default gates
    y_train, y_val = np.array([0] * 6 + [1] * 3 + [2] * 3), np.array([0, 0, 1, 2])
    data = _data(y_train, y_val)
    features = {"train": np.eye(3)[y_train] + 0.01, "val": np.eye(3)[y_val] + 0.01}  # the baseline gets it right
    one_class = np.tile([0.9, 0.05, 0.05], (4, 1))  # always 'a': 0.5, as the majority class
    result = gates.verdict(config, data, one_class, features, "logistic")
    assert not result["blessed"] and [check["passed"] for check in result["checks"]] == [False, False]
    assert result["failed"][0].startswith("beats the majority predictor: val accuracy 0.5000 against 0.5000 "
                                          "(always 'a'")
    right = np.eye(3)[y_val]
    assert gates.verdict(config, data, right, features, "logistic")["blessed"]
    floors = config_module.replace_path(config, "export.gate_min", {"accuracy": 1.0, "macro_recall": 0.9})
    assert gates.verdict(floors, data, right, features, "logistic")["blessed"]
    result = gates.verdict(floors, data, one_class, None, "logistic")
    assert [check["check"] for check in result["checks"]] == ["beats the majority predictor", "accuracy >= 1",
                                                              "macro_recall >= 0.9"]
    per_class = config_module.replace_path(config, "export.gate_min", {"recall@b": 1.0, "f1@z": 0.5})
    result = gates.verdict(per_class, data, right, features, "logistic")
    assert sorted((check["check"], check["model"], check["passed"]) for check in result["checks"][2:]) == [
        ("f1@z >= 0.5", None, False), ("recall@b >= 1", 1.0, True)]  # 'z' is no class: the floor fails
    two = _data(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]), names=("no", "yes"))
    leaning = np.array([[0.9, 0.1], [0.8, 0.2], [0.65, 0.35], [0.45, 0.55]])  # argmax misses one 'yes'
    strict = config_module.replace_path(config, "export.gate_min", {"recall@yes": 1.0})
    assert not gates.verdict(strict, two, leaning, None, "logistic")["blessed"]
    assert gates.verdict(strict, two, leaning, None, "logistic", (0.3, 1))["blessed"]  # decided at 0.3: caught
    change = config_module.replace_path(config, "export.gate_max_drop", 0.1)
    result = gates.verdict(change, data, one_class, None, "logistic", incumbent=("version 1, bundled before", right))
    assert [check["passed"] for check in result["checks"]] == [False, False]  # 0.5 against the old model's 1.0
    assert result["failed"][1].startswith("does not fall below the bundled model: val accuracy 0.5000 against "
                                          "1.0000 (version 1, bundled before, margin -0.1)")
    assert gates.verdict(change, data, right, None, "logistic", incumbent=("v1", one_class))["checks"][1]["passed"]
    regression = _data(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0]), "regression", ())
    mean_only = np.full((2, 1), 2.0)  # the training mean: no better than it (MAE 1 both)
    assert not gates.verdict(config, regression, mean_only, None, "logistic")["blessed"]
    result = gates.verdict(config, regression, np.array([[1.0], [3.0]]), None, "logistic")
    assert result["blessed"] and result["checks"][0]["model"] == pytest.approx(0.0)


@pytest.mark.slow
def test_export_refuses_a_one_class_champion_unless_allowed_and_tags_it(tmp_path):
    config = tiny_config(tmp_path, "export.gate_baseline_margin=-0.05", "export.gate_max_drop=0.0")
    for stage in (clean, split, train):
        stage.run(config)
    export.run(config, allow_unblessed=True)  # version 1 bundled: what the next champion must not fall below
    folder = workspace.stage_dir(tmp_path, config.experiment, "split")
    shape = tuple(splits.split_items(folder, "val").shape[1:])
    inputs = keras.Input(shape)
    flat = keras.layers.Flatten()(inputs)
    out = keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant([5.0] + [0.0] * 9))(flat)
    constant = keras.Model(inputs, out)  # always the first class
    with tracking.run(config, "constant"):
        version, promoted = champion.register(config, constant, {"val/accuracy": 1.0, "val/loss": 0.0},
                                              splits.identity(folder), "classification",
                                              splits.split_items(folder, "val").head(2))
    assert promoted
    before = (workspace.bundle_dir(tmp_path, config.experiment) / "model.tflite").read_bytes()
    with pytest.raises(StageError, match=r"fails its gates on validation data \(beats the majority predictor: "
                                         r"val accuracy 0\.\d+ against 0\.\d+ \(always '\d'.*does not fall below "
                                         r"the bundled model: val accuracy 0\.\d+ against 0\.\d+ \(version 1, "
                                         r"bundled before, margin -0\)"):
        export.run(config)
    assert (workspace.bundle_dir(tmp_path, config.experiment) / "model.tflite").read_bytes() == before  # kept
    assert tracking.version_tags(config, version)["blessed"] == "false"
    export.run(config, allow_unblessed=True)
    bundle = workspace.bundle_dir(tmp_path, config.experiment)
    found = sorted(bundle.rglob("metadata.json"))  # the bundle and every device target's say so
    assert len(found) >= 2 and all(workspace.read_json(path)["blessed"] is False for path in found)
    table = workspace.read_json(workspace.stage_dir(tmp_path, config.experiment, "export") / "export_table.json")
    assert not table["gates"]["blessed"] and len(table["gates"]["checks"]) == 3
