"""The training toolbox, the backbones registry, augmentation, NaN guard, resume after SIGKILL, MirroredStrategy."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from mlflow.tracking import MlflowClient

from models import autoencoder, backbones, resnet
from pipelines.core import config as config_module
from pipelines.core import tracking, workspace
from pipelines.data import augment, readers, splits
from pipelines.stages import clean, split
from pipelines.training import fitting
from tests.conftest import TINY, sigkill_after_first_checkpoint, split_arrays, stage_command, tiny_config


def _split_data(root, *overrides):
    config = tiny_config(root, *overrides)
    clean.run(config)
    split.run(config)
    return config, splits.load_split(workspace.stage_dir(root, config.experiment, "split"))


def test_hub_backbone_loads_a_local_savedmodel_and_matches_the_encoder(tmp_path):
    encoder = autoencoder.build_encoder((4,), (8, 8, 1))
    backbones.save_for_hub(encoder, tmp_path / "encoder")
    settings = config_module.BackboneConfig(kind="hub", handle="encoder")
    layer = backbones.load(settings, (8, 8, 1), tmp_path)
    images = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 1)).astype(np.float32)
    assert np.allclose(layer(images, training=False), encoder(images, training=False), atol=1e-5)
    assert not layer.trainable_weights
    bn_variables = [weight for weight in encoder.trainable_weights if weight.name.startswith("bn")]
    assert bn_variables and backbones.unfreeze(layer, 0) == len(encoder.trainable_weights) - len(bn_variables)


def test_applications_backbone_needs_real_weights_and_unfreezes_top_layers_without_batch_norm(tmp_path):
    with pytest.raises(config_module.ConfigError, match="randomly initialized network is not a pretrained"):
        config_module.load(None, ["model.architecture=transfer", "model.backbone.kind=applications"])
    # A weights file the test makes itself (never presented as pretrained): the loading code reads it back.
    source = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    source.save_weights(tmp_path / "mobilenet.h5")
    settings = config_module.BackboneConfig(kind="applications", application="MobileNetV2", weights="mobilenet.h5")
    backbone = backbones.load(settings, (32, 32, 3), tmp_path)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    expected = source(keras.applications.mobilenet_v2.preprocess_input(images.copy()), training=False)
    assert np.allclose(backbone(images, training=False), expected, atol=1e-4)
    assert not backbone.trainable_weights
    backbones.unfreeze(backbone, 3)
    base = backbone.get_layer("mobilenetv2_1.00_32")
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert trainable and all(not isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    with pytest.raises(FileNotFoundError, match="missing.h5 not found"):
        backbones.load(config_module.BackboneConfig(kind="applications", weights="missing.h5"), (32, 32, 3), tmp_path)


def test_resnet_has_skip_connections_and_a_1x1_bottleneck():
    config = config_module.ModelConfig(filters=(8, 16), bottleneck=4, l1=1e-5)
    model = resnet.build_resnet(config, (16, 16, 1), 10, {"mean": [0.0], "variance": [1.0]})
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 2
    assert model.get_layer("bottleneck_1x1").kernel_size == (1, 1)
    assert model.output_shape == (None, 10) and model.losses  # L1 penalties are collected


@pytest.mark.parametrize(("loss", "optimizer"), [("categorical_crossentropy", "sgd"),
                                                 ("binary_crossentropy", "rmsprop"),
                                                 ("sparse_categorical_crossentropy", "adagrad")])
def test_losses_and_optimizers_train(tmp_path, loss, optimizer):
    config, data = _split_data(tmp_path, f"train.loss={loss}", f"train.optimizer={optimizer}",
                               "train.class_weights=balanced", "train.reduce_lr_patience=1",
                               "model.initializer=glorot_uniform", "model.batch_norm=true")
    model, history, scores = fitting.fit(config, data, 2, log_to_mlflow=False)
    assert len(history["loss"]) == 2 and history["loss"][-1] < history["loss"][0]  # it learns
    predicted = model.predict(data.x["val"].array().astype(np.float32), verbose=0).argmax(axis=1)
    accuracy = (predicted == data.y["val"]).mean()
    assert scores["val/accuracy"] == pytest.approx(accuracy, abs=1e-6)  # the score is the model's own
    assert type(model.optimizer).__name__.lower() == optimizer
    with pytest.raises(ValueError, match="train.loss: 'mape' does not fit a classification task"):
        fitting.loss_for(tiny_config(tmp_path, "train.loss=mape"), "classification")


def test_class_weights_balance_the_training_split(tmp_path):
    config, data = _split_data(tmp_path, "train.class_weights=balanced")
    data.y["train"] = np.array([0] * 30 + [1] * 10)
    data.dataset["class_names"] = ["a", "b"]
    assert fitting.class_weights(config, data) == pytest.approx({0: 40 / 60, 1: 40 / 20})


def test_augmentation_is_seeded_and_applies_to_the_training_batches():
    settings = config_module.AugmentConfig(transforms=({"name": "Affine", "translate_px": 2, "p": 1.0},), seed=3)
    images = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 1), dtype=np.uint8)
    labels = np.arange(8)
    first = next(iter(augment.dataset(images, labels, 8, 0, augment.build(settings))))
    second = next(iter(augment.dataset(images, labels, 8, 0, augment.build(settings))))
    plain = next(iter(augment.dataset(images, labels, 8, 0, None)))
    assert np.array_equal(first[0], second[0]) and first[0].dtype == tf.float32
    assert np.array_equal(first[1], plain[1]) and not np.array_equal(first[0], plain[0])
    with pytest.raises(ValueError, match=r"augment.transforms\[0\]: albumentations has no transform 'Twirl'"):
        augment.build(config_module.AugmentConfig(transforms=({"name": "Twirl"},)))


def test_nan_loss_stops_training_saying_where(tmp_path):
    config, data = _split_data(tmp_path)
    data.x["train"] = readers.ArrayReader(np.full(data.x["train"].shape, np.nan, np.float32))
    with pytest.raises(fitting.TrainingDiverged, match=r"loss became nan at epoch 1, batch \d+ \(learning rate"):
        fitting.fit(config, data, 3, log_to_mlflow=False)


def _tiny_regressor(rate: float = 0.01) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(rate), "mse")
    return model


def test_the_one_fit_path_guards_stops_early_resumes_and_logs(tmp_path):
    """fitting.guarded_fit, which every model's fit goes through: NaN guard, early stopping with the best
    weights, ReduceLROnPlateau, resume of a killed fit from its backup, MLflow epoch curves under a prefix."""
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True)
    bad = x.copy()
    bad[::8, 2] = np.nan
    with pytest.raises(fitting.TrainingDiverged, match=r"loss became nan at epoch 1, batch \d \(learning rate 0.01\)"):
        fitting.guarded_fit(_tiny_regressor(), bad, y, epochs=3, batch_size=16, log=False)
    # a validation set the model cannot improve on: early stopping ends the fit at 1 + patience epochs
    history = fitting.guarded_fit(_tiny_regressor(), x, y, epochs=30, batch_size=16, log=False, patience=2,
                                  validation_data=(x, np.full_like(y, 1e6)), reduce_lr_patience=1)
    assert len(history["loss"]) < 30 and history["lr"][-1] < 0.01
    class KilledAtEpochTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt("killed")

    backup = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        fitting.guarded_fit(_tiny_regressor(), x, y, epochs=5, batch_size=16, log=False, backup_dir=backup,
                            callbacks=[KilledAtEpochTwo()])
    history = fitting.guarded_fit(_tiny_regressor(), x, y, epochs=5, batch_size=16, log=False, backup_dir=backup)
    assert len(history["loss"]) == 3  # resumed after the two epochs that finished
    assert history["loss"][-1] < history["loss"][0] and not any(backup.iterdir())  # cleared when done
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with mlflow.start_run() as run:
            fitting.guarded_fit(_tiny_regressor(), x, y, epochs=2, batch_size=16, validation_data=(x, y),
                                prefix="demo/")
        logged = MlflowClient().get_run(run.info.run_id).data.metrics
        assert {"demo/train/loss", "demo/val/loss"} <= set(logged)
        assert len(MlflowClient().get_metric_history(run.info.run_id, "demo/val/loss")) == 2
    finally:
        mlflow.set_tracking_uri(previous)


def test_a_diverging_optimization_fine_tune_is_refused_not_converted():
    from deploy import optimize

    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    x[3, 1] = np.inf
    with pytest.raises(optimize.Diverged, match="loss became non-finite in epoch 1"):
        optimize.quantization_aware(_tiny_regressor(), "mse", x, x.sum(axis=1), 2, 0.01, batch_size=8)


@pytest.mark.slow
def test_feature_cache_is_built_once_and_the_assembled_model_matches_the_head(tmp_path, capsys):
    from pipelines.stages import pretrain
    from pipelines.training import transfer

    overrides = ("model.architecture=transfer", "model.backbone.pretrain_epochs=1", "model.backbone.filters=[4]",
                 "transfer.method=feature_cache", "train.epochs=2",
                 "augment.transforms=[{name: HorizontalFlip}]")
    config, data = _split_data(tmp_path, *overrides)
    pretrain.run(config)
    digest = splits.identity(workspace.stage_dir(tmp_path, config.experiment, "split"))
    # outside a stage's run: not logged (logging here would start a run of its own and leave it active)
    model, _, scores = transfer.train(config, data, tmp_path, None, digest, log_to_mlflow=False)
    output = capsys.readouterr().out
    assert "augmentation is impossible on cached features" in output and "cached backbone features" in output
    transfer.train(config, data, tmp_path, None, digest, log_to_mlflow=False)
    assert "features read from the cache" in capsys.readouterr().out
    assert model.get_layer("backbone").__class__.__name__ == "KerasLayer"
    assert scores["val/accuracy"] > 0.2  # chance 0.1


@pytest.mark.slow
def test_killed_training_resumes_and_its_run_is_not_left_running(tmp_path):
    settings = [*TINY, f"runtime.root={tmp_path}", "train.epochs=60", "train.patience=60", "data.image_size=8"]
    config = tiny_config(tmp_path, "train.epochs=60", "train.patience=60")
    clean.run(config)
    split.run(config)
    command = stage_command("train", settings)
    backup_root = workspace.stage_dir(tmp_path, config.experiment, "train").parent / ".backup"
    sigkill_after_first_checkpoint(command, backup_root)
    tracking.configure(config)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(config.experiment).experiment_id
    killed = client.search_runs([experiment], "tags.stage = 'train'")[0]
    assert killed.info.status == "RUNNING"  # as SIGKILL left it

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from the backup of an interrupted run" in resumed.stdout
    assert client.get_run(killed.info.run_id).info.status == "KILLED"
    runs = client.search_runs([experiment], "tags.stage = 'train'", order_by=["attributes.start_time DESC"])
    steps = [point.step for point in client.get_metric_history(runs[0].info.run_id, "train/loss")]
    assert steps and min(steps) > 0  # the rerun started after the last completed epoch
    assert runs[0].data.metrics["val/accuracy"] > 0.6  # 60 epochs on 8x8 digits; chance 0.1
    processed = workspace.stage_dir(tmp_path, config.experiment, "train").parent
    assert not list(processed.glob(".train.*.tmp"))  # the killed run's staging folder is gone too


MIRRORED = """
import os, sys
from pathlib import Path
import pipelines  # the one Keras, before TensorFlow
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pipelines.core import config as config_module
from pipelines.data import splits
from pipelines.training import fitting
from tests.conftest import tiny_config
root = sys.argv[1]
for strategy in ("default", "mirrored"):
    config = tiny_config(root, "train.epochs=8", "train.patience=8", f"runtime.strategy={strategy}")
    data = splits.load_split(Path(root) / "data/processed/digits/split")
    replicas = fitting.strategy(config.runtime).num_replicas_in_sync
    model, history, scores = fitting.fit(config, data, 8, log_to_mlflow=False)
    print(strategy, replicas, scores["val/accuracy"])
"""


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus_reaches_the_same_accuracy(tmp_path):
    config = tiny_config(tmp_path)
    clean.run(config)
    split.run(config)
    result = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = dict((line.split()[0], line.split()[1:]) for line in result.stdout.splitlines()
                 if line.startswith(("default", "mirrored")))
    assert lines["mirrored"][0] == "2" and lines["default"][0] == "1"
    assert abs(float(lines["mirrored"][1]) - float(lines["default"][1])) <= 0.06
    assert float(lines["default"][1]) > 0.4  # 8 epochs; chance 0.1 (two equally broken runs would agree too)


@pytest.mark.slow
def test_transfer_pipeline_end_to_end_registers_a_hub_model_that_loads_back(tmp_path):
    from pipelines import __main__ as cli

    overrides = [*TINY, f"runtime.root={tmp_path}", "model.architecture=transfer", "model.backbone.filters=[4]",
                 "model.backbone.pretrain_epochs=2", "transfer.method=fine_tune", "transfer.fine_tune_epochs=1",
                 "train.epochs=6", "train.learning_rate=3e-3",
                 "augment.transforms=[{name: Affine, translate_px: 1, p: 0.5}]"]
    assert cli.main(["all", *[item for value in overrides for item in ("--set", value)]]) == 0
    config = tiny_config(tmp_path, *overrides[len(TINY):])
    model = tracking.load_champion(config)
    assert "KerasLayer" in {type(layer).__name__ for layer in model.layers}
    train = workspace.read_manifest(workspace.stage_dir(tmp_path, config.experiment, "train"))["metrics"]
    assert "phase1/val/accuracy" in train and train["val/accuracy"] > 0.3  # chance 0.1; about 0.66 here
    report = workspace.read_json(workspace.stage_dir(tmp_path, config.experiment, "evaluate") / "test_report.json")
    assert report["results"]["keras"]["accuracy"] > 0.3
    pretrain = workspace.read_manifest(workspace.stage_dir(tmp_path, config.experiment, "pretrain"))["metrics"]
    assert 15.5 < pretrain["pretrain/val_psnr_noisy_db"] < 19.5  # noise std 40 on 0-255, as in the denoise test
    from deploy.edge.predict import LiteRTModel

    (x_val,) = split_arrays(workspace.stage_dir(tmp_path, config.experiment, "split"), "val", "x")
    bundle = workspace.bundle_dir(tmp_path, config.experiment)
    assert LiteRTModel(bundle / "model.tflite").predict(x_val[:4]).shape == (4, 10)


def test_source_task_backbone_must_not_see_the_target_classes():
    with pytest.raises(config_module.ConfigError, match="disjoint from model.backbone.source_classes"):
        config_module.load(None, ["model.architecture=transfer", "model.backbone.kind=project_source_task",
                                  "data.classes=['3', '5']"])


@pytest.mark.slow
def test_two_workers_train_one_model_under_multi_worker_and_only_the_chief_writes(tmp_path):
    """`make train` under runtime.strategy: multi_worker on a loopback cluster of two processes (TF_CONFIG):
    they train in step; the chief writes the stage folder, logs the one MLflow run and registers the model."""
    import json

    from tests.conftest import free_port

    # six shard files: each worker reads its own (auto-sharding by file)
    settings = [*TINY, f"runtime.root={tmp_path}", "train.epochs=6", "train.patience=6", "data.shard_records=300",
                "runtime.in_memory_mb=0"]  # streamed, not read into memory
    config = tiny_config(tmp_path, "train.epochs=6", "train.patience=6", "data.shard_records=300")
    clean.run(config)
    split.run(config)
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    workers, launched = [], []
    for index in range(2):
        environment = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                              "task": {"type": "worker", "index": index}})}
        command = stage_command("train", [*settings, "runtime.strategy=multi_worker"])
        launched.append((command, environment))
        workers.append(subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True))
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (_, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-2000:]
    folder = workspace.stage_dir(tmp_path, config.experiment, "train")
    manifest = workspace.read_manifest(folder)
    assert manifest["metrics"]["val/accuracy"] > 0.3  # 6 epochs; chance is 0.1
    assert manifest["metrics"]["train/replicas"] == 2  # one replica per worker, in step
    tracking.configure(config)
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name(config.experiment).experiment_id],
                              "tags.stage = 'train'")
    assert [run.info.run_id for run in runs] == [manifest["run_id"]]  # one run: the chief's
    assert runs[0].data.params["runtime.strategy"] == "multi_worker"
    versions = client.search_model_versions(f"name = '{config.experiment}'")
    assert [version.run_id for version in versions] == [manifest["run_id"]]
    assert not list(tmp_path.glob("**/train-worker-*"))  # the worker's folder was temporary
    reruns = [subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for command, environment in launched]
    for rerun in reruns:  # nothing changed: the chief and the worker both skip (neither waits for the other)
        out, err = rerun.communicate(timeout=180)
        assert rerun.returncode == 0 and "[train] skipped" in out, err[-2000:]
