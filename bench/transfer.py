"""Benchmark `transfer`: feature extraction and fine-tuning on digits with the project's autoencoder backbone
(through hub.KerasLayer), digits 0-4 to 5-9 with a frozen source-task backbone, the cached-feature speed-up,
and training throughput with and without augmentation, all in one run.

`cached_head_speedup` is the time of a training epoch through the frozen backbone over one of the head on
cached features, same head, same batch size. It grows with the backbone's cost: the default two-block encoder
is so cheap on 16x16 digits that Keras's per-step overhead dominates (`cached_head_speedup_small_backbone`),
so the headline figure uses the same autoencoder architecture widened to three blocks of 64, 128 and 256
filters on the digits drawn at 32x32 (pretrained for 2 epochs; an epoch's time does not depend on how well
the weights were trained). Epoch times are medians over epochs 2 to 4 of one fit, from tf.data batches of
128 for both, with `steps_per_execution` set to a whole epoch for both networks so that Python's per-step
overhead, which would otherwise be most of a head epoch, is left out of both."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras
import yaml

import models
from bench import scale
from models import transfer as transfer_models
from pipelines import __main__ as cli
from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.data import augment, splits
from pipelines.training import transfer

WORK = Path(__file__).parent / ".work" / "transfer"
BATCH = 128  # the same for both timings
PHOTOS, PHOTO_SIDE = 1500, 64


def _pipeline(config_file: str, *stages: str, extra: tuple[str, ...] = (),
              flags: dict[str, list[str]] | None = None) -> config_module.Config:
    overrides = [f"runtime.root={WORK}", "runtime.verbose=0", *extra]
    for name in stages:
        arguments = [name, "--config", config_file, *(flags or {}).get(name, [])] + [
            item for value in overrides for item in ("--set", value)]
        if cli.main(arguments) != 0:
            raise RuntimeError(f"bench transfer: stage {name} failed on {config_file}")
    return config_module.load(config_file, overrides)


def _epoch_speedup(config: config_module.Config, data: splits.SplitData) -> float:
    backbone = transfer.load_backbone(config, data.x["train"].shape[1:])
    images = data.x["train"].array()
    features = backbone(tf.constant(images, tf.float32), training=False).numpy()
    head = transfer_models.build_head(config.model, features.shape[1], data.num_outputs, data.task)
    model = transfer_models.build_transfer(backbone, head, data.x["train"].shape[1:])
    steps = len(features) // BATCH  # a whole epoch per tf.function call: Keras's per-step overhead out of both
    for network in (head, model):
        network.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", steps_per_execution=steps)
    cached, through = head_epoch_seconds(head, model, features, images, data.y["train"], BATCH)
    return through / cached


def _throughput_ratio(config: config_module.Config, data: splits.SplitData) -> float:
    """Images per second of a training epoch with the config's augmentation over one without."""
    model = models.architectures()["small_cnn"](config_module.ModelConfig(), data.x["train"].shape[1:],
                                                         data.num_outputs, {"mean": [0.0], "variance": [1.0]})
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    rates = {}
    for name, compose in (("plain", None), ("augmented", augment.build(config.augment))):
        dataset = augment.dataset(data.x["train"], data.y["train"], 32, 0, compose)
        model.fit(dataset.take(2), epochs=1, verbose=0)
        started = time.perf_counter()
        model.fit(dataset, epochs=3, verbose=0)
        rates[name] = 3 * len(data.x["train"]) / (time.perf_counter() - started)
    return rates["augmented"] / rates["plain"]


def _photo_config(name: str, model: dict, recipe: dict) -> Path:
    """The photo-crop experiment `name` in the work folder, with `model`'s and `recipe`'s (transfer) fields; the
    rest shared."""
    tree = {"experiment": f"photos_{name}",
            "data": {"source": "image_folder", "path": str(WORK / f"photos-{PHOTOS}"), "image_size": PHOTO_SIDE,
                     "channels": 3},
            "model": model, "transfer": recipe, "train": {"epochs": 40, "patience": 8},
            "augment": {"transforms": [{"name": "HorizontalFlip", "p": 0.5}]},
            "search": {"n_trials": 0}, "export": {"variants": ["int8"], "targets": ["cortex_m4"]}}
    path = WORK / f"photos_{name}.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def photo_crops() -> dict:
    """The project backbone against the small CNN on photo crops: test accuracy, parameters, Cortex-M4 fit."""
    scale.make_folder(WORK / f"photos-{PHOTOS}", PHOTOS)
    figures = {}
    for name, model, recipe in (("small_cnn", {}, {}),
                        ("project_backbone", {"architecture": "transfer", "backbone": {
                            "kind": "project_autoencoder", "filters": [32, 64], "pretrain_epochs": 30}},
                         {"method": "fine_tune", "fine_tune_lr_factor": 0.1, "fine_tune_epochs": 20})):
        stages = ("clean", "split", "pretrain", "train", "export", "evaluate") if model else (
            "clean", "split", "train", "export", "evaluate")
        # both models are scored on the same test crops, by design: the second evaluate reuses the test items
        config = _pipeline(str(_photo_config(name, model, recipe)), *stages, flags={"evaluate": ["--reuse-test"]})
        report = workspace.read_json(workspace.stage_dir(WORK, config.experiment, "evaluate") / "test_report.json")
        table = workspace.read_json(workspace.stage_dir(WORK, config.experiment, "export") / "export_table.json")
        trained = workspace.read_manifest(workspace.stage_dir(WORK, config.experiment, "train"))
        figures.update({f"{name}_test_accuracy": report["results"]["keras"]["accuracy"],
                        f"{name}_params": int(trained["metrics"]["model/params"]),
                        f"{name}_fits_cortex_m4": int(
                            table["targets"]["cortex_m4"]["variants"]["int8"]["verdict"] == "fits")})
        if model:
            pretrained = workspace.read_manifest(workspace.stage_dir(WORK, config.experiment, "pretrain"))
            figures[f"{name}_pretrain_gain"] = pretrained["metrics"]["pretrain/val_gain"]
    return figures


def run() -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    config = _pipeline("configs/digits_transfer.yaml", "clean", "split", "pretrain", "train")
    train = workspace.read_manifest(workspace.stage_dir(WORK, config.experiment, "train"))["metrics"]
    data = splits.load_split(workspace.stage_dir(WORK, config.experiment, "split"))
    small_speedup, ratio = _epoch_speedup(config, data), _throughput_ratio(config, data)
    wide = _pipeline("configs/digits_transfer.yaml", "clean", "split", "pretrain", extra=(
        "experiment=digits_transfer_wide", "data.image_size=32", "model.backbone.filters=[64, 128, 256]",
        "model.backbone.pretrain_epochs=2"))
    speedup = _epoch_speedup(wide, splits.load_split(workspace.stage_dir(WORK, wide.experiment, "split")))
    target = _pipeline("configs/digits_5to9.yaml", "clean", "split", "pretrain", "train", "tune", "export",
                       "evaluate", extra=("search.n_trials=0",))  # the frozen-backbone model as trained
    report = workspace.read_json(workspace.stage_dir(WORK, target.experiment, "evaluate") / "test_report.json")
    return {**photo_crops(), "feature_extraction_val_accuracy": train["phase1/val/accuracy"],
            "fine_tune_val_accuracy": train["val/accuracy"],
            "source_target_test_accuracy": report["results"]["keras"]["accuracy"],
            "cached_head_speedup": round(float(speedup), 2),
            "cached_head_speedup_small_backbone": round(float(small_speedup), 2),
            "augmented_throughput_ratio": round(float(ratio), 3)}


class _EpochTimer(keras.callbacks.Callback):
    """Seconds of each training epoch."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def head_epoch_seconds(head: keras.Model, model: keras.Model, features: np.ndarray, x: np.ndarray,
                       y: np.ndarray, batch_size: int, epochs: int = 4) -> tuple[float, float]:
    """Median seconds of a training epoch of the head on cached features, and of one through the frozen
    backbone (the first epoch, which traces the graph, is left out)."""
    timings = []
    for network, inputs in ((head, features), (model, x.astype(np.float32))):
        timer = _EpochTimer()
        data = tf.data.Dataset.from_tensor_slices((inputs, y)).batch(batch_size).cache()
        network.fit(data, epochs=epochs, callbacks=[timer], verbose=0)
        timings.append(float(np.median(timer.seconds[1:])))
    return timings[0], timings[1]
