"""The course's training recipe: ReduceLROnPlateau with a factor and a floor, the learning rate logged every
epoch, batch normalization in the MLP, and the bias-variance verdict of a trained model."""

import mlflow
import numpy as np
import pytest
import tf_keras as keras
from mlflow.tracking import MlflowClient

from models import mlp
from pipelines.core import config as config_module
from pipelines.data import readers
from pipelines.data.splits import SplitData
from pipelines.training import fitting


class _Flat(keras.callbacks.Callback):
    """A validation score that never improves: every epoch is a plateau."""

    def on_epoch_end(self, epoch, logs=None):
        logs["val_flat"] = 0.5


def _regressor(rate: float = 0.01) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(rate), "mse")
    return model


def _logged_rates(tmp_path, **options) -> list[float]:
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run() as run:
            fitting.guarded_fit(_regressor(), x, y, epochs=4, batch_size=16, validation_data=(x, y),
                                monitor="val_flat", mode="max", scorers=[_Flat()], **options)
        history = MlflowClient().get_metric_history(run.info.run_id, "train/learning_rate")
        assert "train/lr" not in MlflowClient().get_run(run.info.run_id).data.metrics
    finally:
        mlflow.set_tracking_uri(previous)
    return [point.value for point in sorted(history, key=lambda point: point.step)]


def test_reduce_lr_on_plateau_takes_its_factor_and_floor_and_the_rate_is_logged_every_epoch(tmp_path):
    # plateau from the second epoch: 0.01, then x0.1 per plateau, floored at 2e-4
    rates = _logged_rates(tmp_path, reduce_lr_patience=1, reduce_lr_factor=0.1, min_lr=2e-4)
    assert rates == pytest.approx([0.01, 0.01, 0.001, 2e-4], rel=1e-5)
    assert _logged_rates(tmp_path) == pytest.approx([0.01] * 4)  # no plateau callback: logged all the same


def test_the_plateau_settings_are_config_fields_checked_at_load():
    config = config_module.load(None, ["train.reduce_lr_factor=0.2", "train.min_learning_rate=1e-5"])
    assert (config.train.reduce_lr_factor, config.train.min_learning_rate) == (0.2, 1e-5)
    with pytest.raises(config_module.ConfigError, match="train.reduce_lr_factor: must be < 1, got 1.0"):
        config_module.load(None, ["train.reduce_lr_factor=1"])
    with pytest.raises(config_module.ConfigError, match="train.min_learning_rate: must be below train.learning_rate"):
        config_module.load(None, ["train.reduce_lr_patience=2", "train.min_learning_rate=0.01"])


def test_the_mlp_honours_batch_norm():
    settings = config_module.ModelConfig(architecture="mlp", hidden_layers=2, dense_units=8, batch_norm=True)
    model = mlp.build_mlp(settings, (5,), 3, {"scope": "in_preprocessing"})
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 2 and not model.get_layer("dense0").use_bias  # batch norm's beta is the bias
    plain = mlp.build_mlp(config_module.ModelConfig(architecture="mlp", hidden_layers=2, dense_units=8), (5,), 3,
                          {"scope": "in_preprocessing"})
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers)
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    before = norms[0].moving_mean.numpy().copy()
    model.fit(rng.normal(3.0, 1.0, (64, 5)), rng.integers(0, 3, 64), epochs=1, batch_size=16, verbose=0)
    assert not np.allclose(norms[0].moving_mean.numpy(), before)  # it normalizes, in training mode


def _classifier_data(x_train, y_train) -> SplitData:
    return SplitData(x={"train": readers.ArrayReader(x_train)}, y={"train": y_train},
                     dataset={"task": "classification", "class_names": ["a", "b"]}, normalizer={})


def _sign_classifier() -> keras.Model:
    """Class 1 when the first feature is positive, else class 0: a model whose training score the test sets."""
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.layers[-1].set_weights([np.array([[-10.0, 10.0], [0.0, 0.0]], np.float32), np.zeros(2, np.float32)])
    return model


def test_the_bias_variance_verdict_names_under_and_over_fitting_with_the_numbers():
    config = config_module.load(None, [])  # underfit_shortfall 0.05, overfit_gap 0.03
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    fits = _classifier_data(x, (x[:, 0] > 0).astype(np.int64))  # the model is right on every training item
    over = fitting.bias_variance(_sign_classifier(), config, fits, {"val/accuracy": 0.9})
    assert over["verdict"] == "over-fitting" and over["train"] == 1.0 and over["gap"] == pytest.approx(0.1)
    assert over["line"].startswith("over-fitting: train accuracy 1.0000, val accuracy 0.9000; shortfall 0.000")
    assert fitting.bias_variance(_sign_classifier(), config, fits, {"val/accuracy": 0.99})["verdict"] == "fine"
    noise = _classifier_data(x, rng.integers(0, 2, 200))  # labels it cannot know: about half right
    under = fitting.bias_variance(_sign_classifier(), config, noise, {"val/accuracy": 0.5})
    assert under["verdict"] == "under-fitting" and under["shortfall"] > 0.3
    assert "(train.underfit_shortfall 0.05)" in under["line"]


def test_the_bias_variance_verdict_of_a_regressor_is_relative_to_a_constant_predictor():
    config = config_module.load(None, ["data.source=csv", "data.path=x.csv", "data.target=y",
                                       "model.architecture=mlp"])
    x = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    data = SplitData(x={"train": readers.ArrayReader(x)}, y={"train": x[:, 0] * 2.0},
                     dataset={"task": "regression", "class_names": []}, normalizer={})
    inputs = keras.Input((2,))
    exact = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    exact.layers[-1].set_weights([np.array([[2.0], [0.0]], np.float32), np.zeros(1, np.float32)])
    found = fitting.bias_variance(exact, config, data, {"val/mae": 0.5})
    constant = np.abs(data.y["train"] - np.median(data.y["train"])).mean()
    assert found["train"] == pytest.approx(0.0, abs=1e-5) and found["constant"] == pytest.approx(constant, rel=1e-5)
    assert found["verdict"] == "over-fitting" and found["gap"] == pytest.approx(0.5 / constant, rel=1e-4)
    assert "as shares of a constant predictor's mae" in found["line"]


@pytest.mark.slow  # a whole train stage: 39 s on 2 busy cores
def test_the_train_stage_prints_tags_and_reports_its_bias_variance_verdict(tmp_path, capsys):
    from pipelines.core import tracking, workspace
    from pipelines.stages import clean, split, train
    from tests.conftest import tiny_config

    config = tiny_config(tmp_path, "train.epochs=2")
    clean.run(config)
    split.run(config)
    result = train.run(config)
    report = workspace.read_json(result.folder / "train_report.json")["bias_variance"]
    assert report["verdict"] in ("under-fitting", "over-fitting", "fine") and report["metric"] == "accuracy"
    assert report["val"] == pytest.approx(result.metrics["val/accuracy"], abs=1e-6)
    assert f"[train] bias-variance: {report['line']}" in capsys.readouterr().out
    tracking.configure(config)
    run = MlflowClient().get_run(result.run_id)
    assert run.data.tags["bias_variance"] == report["verdict"] and run.data.tags["bias_variance.line"] == report["line"]
    assert run.data.metrics["fit/train_accuracy"] == pytest.approx(report["train"])
    assert run.data.metrics["fit/gap"] == pytest.approx(report["gap"])
    rates = MlflowClient().get_metric_history(result.run_id, "train/learning_rate")
    assert len(rates) == result.metrics["train/epochs_run"] and rates[0].value == pytest.approx(1e-3)


def test_train_monitor_lets_early_stopping_follow_the_training_loss_while_validation_still_scores():
    # validation labels the features cannot tell: the validation loss worsens as training learns, the training
    # loss keeps falling (full batches, a learnable rule)
    rng = np.random.default_rng(0)
    x_train, x_val = rng.normal(size=(64, 4)).astype(np.float32), rng.normal(size=(64, 4)).astype(np.float32)
    data = SplitData(x={"train": readers.ArrayReader(x_train), "val": readers.ArrayReader(x_val)},
                     y={"train": (x_train[:, 0] > 0).astype(np.int64), "val": (x_val[:, 0] <= 0).astype(np.int64)},
                     dataset={"task": "classification", "class_names": ["a", "b"]},
                     normalizer={"scope": "in_preprocessing"})
    fields = ["data.source=csv", "data.path=x.csv", "data.target=y", "model.architecture=mlp",
              "model.hidden_layers=1", "model.dense_units=8", "train.batch_size=64", "train.patience=2",
              "train.learning_rate=0.05", "train.checkpoint=false"]
    _, by_val, _ = fitting.fit(config_module.load(None, fields), data, epochs=15, log_to_mlflow=False)
    _, by_train, scores = fitting.fit(config_module.load(None, fields + ["train.monitor=train"]), data, epochs=15,
                                      log_to_mlflow=False)
    assert len(by_val["loss"]) < 15  # stopped on the worsening validation loss
    assert len(by_train["loss"]) == 15 and by_train["loss"][-1] < by_train["loss"][0]
    assert scores["val/accuracy"] < 0.5  # validation still scores the model it kept
    with pytest.raises(config_module.ConfigError, match="train.monitor"):
        config_module.load(None, ["train.monitor=test"])
