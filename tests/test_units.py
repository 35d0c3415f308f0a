"""Pure pieces of the stages: canonical images, drop rules, search sampling, variant choice, metrics."""

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from pipelines import clean, evaluate, export, tune
from pipelines import config as config_module


def test_canonical_image_is_uint8_scaled_and_resized():
    raw = np.zeros((8, 8, 1))
    raw[2:6, 3:5] = 16.0  # full-intensity block; the rest is background
    image = clean.to_canonical(raw, 16.0, 16)
    assert image.shape == (16, 16, 1) and image.dtype == np.uint8
    assert image[8, 8, 0] == 255 and image[:2].max() == 0 and image[:, -2:].max() == 0


def test_drop_rules_log_duplicates_and_conflicts():
    images = np.array([[1], [1], [2], [2], [3]], dtype=np.uint8)
    labels = np.array([0, 0, 1, 2, 1])
    drops = clean.find_drops(images, labels, config_module.CleanConfig())
    assert drops[1][0] == "drop_exact_duplicates" and 0 not in drops
    assert drops[2][0] == drops[3][0] == "drop_label_conflicts"
    kept = clean.find_drops(images, labels, config_module.CleanConfig(drop_label_conflicts=False))
    assert set(kept) == {1, 3}


def test_random_search_samples_inside_the_space_and_is_seeded():
    config = config_module.from_dict({"search": {"n_trials": 20, "space": {
        "train.learning_rate": {"kind": "log_uniform", "low": 1e-4, "high": 1e-2},
        "train.batch_size": {"kind": "int", "low": 16, "high": 64},
        "train.optimizer": {"kind": "choice", "values": ["adam", "sgd"]}}}})
    trials = tune.sample(config.search)
    assert len(trials) == 20 and trials == tune.sample(config.search)
    rates = [trial["train.learning_rate"] for trial in trials]
    assert min(rates) >= 1e-4 and max(rates) <= 1e-2 and min(rates) < 1e-3 < max(rates)
    assert all(isinstance(trial["train.batch_size"], int) and 16 <= trial["train.batch_size"] <= 64
               for trial in trials)
    applied = tune.apply(config, trials[0])
    assert applied.train.optimizer == trials[0]["train.optimizer"]


def test_export_picks_the_smallest_variant_within_the_allowed_drop():
    table = {"float32": {"size_bytes": 100, "val_accuracy": 0.99},
             "int8": {"size_bytes": 30, "val_accuracy": 0.975}}
    assert export.choose(table, 0.99, 0.02) == "int8"
    assert export.choose(table, 0.99, 0.01) == "float32"
    with pytest.raises(RuntimeError, match="no TF-Lite variant within"):
        export.choose(table, 0.999, 0.001)


def test_classification_metrics_match_scikit_learn():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 2])
    result = evaluate.classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["macro_f1"] == pytest.approx(sk_metrics.f1_score(y_true, y_pred, average="macro"))
    assert result["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert result["per_class"]["c"]["recall"] == pytest.approx(2 / 3)
