"""Sensor recordings through the stages: windows that never leak across splits, bad recordings named, and the
BasicMotions preset end to end to an int8 bundle that fits a microcontroller."""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from pipelines import __main__ as cli
from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.data import signals
from pipelines.stages import clean, split
from tests.conftest import sine_recordings

# found, never imported (importing aeon needs numba, which our pins exclude; the files are read directly)
AEON = pytest.mark.skipif(importlib.util.find_spec("aeon") is None,
                          reason="the embedded sensor data ship inside the aeon wheel (make setup)")


_recordings = sine_recordings


def _config(root, *overrides):
    return config_module.load(None, [f"runtime.root={root}", "data.source=sensor_csv", "data.path=recordings",
                                     "data.target=activity", "data.time_column=t", "data.signal_channels=[ax, ay]",
                                     "data.window=20", "data.stride=10", "model.architecture=cnn1d",
                                     "split.val_fraction=0.25", "split.test_fraction=0.25", *overrides])


def test_windows_of_one_recording_never_cross_splits(tmp_path):
    _recordings(tmp_path / "recordings")
    config = _config(tmp_path)
    clean.run(config)
    folder = split.run(config).folder
    items = workspace.read_json(folder / "split_manifest.json")["items"]
    assert len(items) == 12 * 11  # (120 - 20) / 10 + 1 windows per recording
    split_of = {}
    for item in items:
        split_of.setdefault(item["group"], set()).add(item["split"])
    assert all(len(found) == 1 for found in split_of.values())  # one split per recording
    assert {name for found in split_of.values() for name in found} == {"train", "val", "test"}
    assert (np.load(folder / "train_x.npy").shape[1:]) == (20, 2)
    normalizer = workspace.read_json(folder / "normalizer.json")
    assert len(normalizer["mean"]) == 2  # per channel, on train windows


def test_the_temporal_option_puts_every_test_window_after_every_train_window_of_its_stream(tmp_path):
    _recordings(tmp_path / "recordings", count=4, length=400)
    config = _config(tmp_path, "split.strategy=temporal")
    clean.run(config)
    items = workspace.read_json(split.run(config).folder / "split_manifest.json")["items"]
    for stream in {item["stream"] for item in items}:
        member = [item for item in items if item["stream"] == stream]
        train_end = max(item["time"] for item in member if item["split"] == "train") + 20
        val = [item["time"] for item in member if item["split"] == "val"]
        test = [item["time"] for item in member if item["split"] == "test"]
        assert val and test and min(val) >= train_end and min(test) >= max(val) + 20  # windows end before


@pytest.mark.parametrize("edit, message", [
    (lambda frame: frame.iloc[:15], r"rec03.*shorter than|rec03.*15 samples"),
    (lambda frame: frame.drop(columns="ay"), r"rec03.csv.*'ay'"),
    (lambda frame: frame.assign(ax=frame.ax.astype(object).where(frame.index != 7, "spike")),
     r"rec03.csv.*(line|row) 9.*'ax'|rec03.csv.*'ax'.*(line|row) 9"),
])
def test_a_bad_recording_stops_clean_naming_the_file_and_row(tmp_path, capsys, edit, message):
    _recordings(tmp_path / "recordings")
    path = tmp_path / "recordings" / "rec03.csv"
    edit(pd.read_csv(path)).to_csv(path, index=False)
    arguments = ["clean", "--set", f"runtime.root={tmp_path}", "--set", "data.source=sensor_csv", "--set",
                 "data.path=recordings", "--set", "data.target=activity", "--set", "data.time_column=t", "--set",
                 "data.signal_channels=[ax, ay]", "--set", "data.window=20", "--set", "model.architecture=cnn1d"]
    assert cli.main(arguments) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # one line, no traceback
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not workspace.stage_dir(tmp_path, config_module.load(None, []).experiment, "clean").exists()


@AEON
@pytest.mark.slow
def test_basic_motions_runs_end_to_end_to_an_int8_bundle_that_fits_a_cortex_m4(tmp_path):
    settings = ["--config", "configs/motions.yaml", "--set", f"runtime.root={tmp_path}", "--set", "train.epochs=15",
                "--set", "search.n_trials=1", "--set", "search.max_trials=1", "--set", "search.epochs=3"]
    assert cli.main(["all", *settings]) == 0
    report = workspace.read_json(workspace.stage_dir(tmp_path, "motions", "evaluate") / "test_report.json")
    keras_accuracy = report["results"]["keras"]["accuracy"]
    variant = report["record"]["tflite_variant"]
    assert keras_accuracy > 0.6  # four activities: chance is 0.25
    assert abs(report["results"][variant]["accuracy"] - keras_accuracy) <= 0.05
    table = workspace.read_json(workspace.stage_dir(tmp_path, "motions", "export") / "export_table.json")
    assert table["targets"]["cortex_m4"]["variants"]["int8"]["verdict"] == "fits"  # ran on TFLM, in budget
    bundle = workspace.bundle_dir(tmp_path, "motions")
    metadata = workspace.read_json(bundle / "metadata.json")
    assert metadata["preprocessing"]["kind"] == "signal" and metadata["preprocessing"]["window"] == 50
    recordings = signals.load_embedded("basic_motions")  # the device path: a CSV recording in, labels out
    pd.DataFrame(recordings.signals[0], columns=recordings.channels).to_csv(tmp_path / "one.csv", index=False)
    pd.DataFrame(recordings.signals[1][:30], columns=recordings.channels).to_csv(tmp_path / "short.csv", index=False)
    from deploy.edge import predict

    results = predict.predict(bundle, [str(tmp_path / "short.csv"), str(tmp_path / "one.csv")])
    # the short recording is named and fails alone; the other gets one line per window, then its vote
    assert results[0] == (str(tmp_path / "short.csv"), None,
                          f"{tmp_path / 'short.csv'}: 30 samples, shorter than one window (50)")
    windows, voted = results[1:7], results[7]
    assert len(results) == 8 and all(label in recordings.class_names for _, label, _ in windows)
    # parity: the windows the pipeline stored for this recording get the same labels from the bundle's model
    split_folder = workspace.stage_dir(tmp_path, "motions", "split")
    stored = {}
    for name in ("train", "val", "test"):
        x, ids = workspace.load_arrays(split_folder, name, "x", "ids")
        stored.update({item: window for item, window in zip(ids.tolist(), x)
                       if item.startswith(f"{recordings.ids[0]}@")})
    model = predict.LiteRTModel(bundle / "model.tflite")
    starts = sorted(stored, key=lambda item: int(item.split("@")[1]))
    outputs = model.predict(np.stack([stored[item] for item in starts]))
    assert [label for _, label, _ in windows] == [recordings.class_names[i] for i in outputs.argmax(axis=1)]
    label, share = predict.vote(outputs)
    assert voted == (str(tmp_path / "one.csv"), recordings.class_names[label], share)


def test_the_threshold_is_the_best_f1_on_labelled_validation_else_a_normal_percentile():
    from pipelines.training import anomaly

    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 1.0])
    cut, method = anomaly.threshold(scores, np.array([0, 0, 0, 0, 1, 1]), 99)
    assert cut == 0.9 and method == "best F1 on validation"
    cut, method = anomaly.threshold(scores[:4], np.zeros(4, int), 50)
    assert cut == pytest.approx(0.25) and "50th percentile" in method
    row = anomaly.report(np.array([0, 0, 0, 1, 1, 0]), scores, 0.35)  # flags 0.4 and 0.9 (anomalous), 1.0
    assert (row["precision"], row["recall"], row["flagged"]) == (pytest.approx(2 / 3), 1.0, 3)
    assert row["roc_auc"] == pytest.approx(6 / 8)  # 0.4 and 0.9 each above three of the four normal scores


@AEON
@pytest.mark.slow
def test_the_anomaly_preset_runs_through_train_export_and_evaluate_and_its_test_split_once(tmp_path):
    from deploy.edge import predict
    from pipelines.core.errors import DataError
    from pipelines.stages import evaluate

    settings = ["--config", "configs/bleeding_anomaly.yaml", "--set", f"runtime.root={tmp_path}",
                "--set", "train.epochs=10", "--set", "search.n_trials=1", "--set", "search.epochs=3"]
    assert cli.main(["all", *settings]) == 0
    report = workspace.read_json(workspace.stage_dir(tmp_path, "bleeding_anomaly", "evaluate") / "test_report.json")
    variant = report["record"]["tflite_variant"]
    for name in ("keras", variant):
        assert report["results"][name]["anomalous_windows"] > 0  # the test split holds the anomaly
        assert report["results"][name]["roc_auc"] > 0.9 and report["results"][name]["recall"] > 0.5
    table = workspace.read_json(workspace.stage_dir(tmp_path, "bleeding_anomaly", "export") / "export_table.json")
    assert table["variants"]["int8"]["tflm_arena_bytes"] > 0  # the int8 autoencoder ran on TFLite Micro
    bundle = workspace.bundle_dir(tmp_path, "bleeding_anomaly")
    metadata = workspace.read_json(bundle / "metadata.json")
    assert metadata["task"] == "anomaly" and metadata["variant"] == variant
    assert metadata["threshold"] == table["variants"][variant]["threshold"] == report["results"][variant]["threshold"]
    items = workspace.read_json(workspace.stage_dir(tmp_path, "bleeding_anomaly", "split") /
                                "split_manifest.json")["items"]
    train_end = max(item["time"] for item in items if item["split"] == "train") + 64
    assert min(item["time"] for item in items if item["split"] == "test") >= train_end

    # the device path: raw values of the recording in, a flag per window out; the labelled anomaly is flagged
    series = signals.load_embedded("internal_bleeding")
    pd.DataFrame(series.signals[0], columns=series.channels).to_csv(tmp_path / "series.csv", index=False)
    flags = predict.predict(bundle, [str(tmp_path / "series.csv")])
    anomalous = series.sample_labels[0]
    assert {label for _, label, _ in flags} <= {"normal", "anomaly"}
    assert any(label == "anomaly" and anomalous[int(name.rsplit("@", 1)[1]):][:64].any() for name, label, _ in flags)

    assert cli.main(["evaluate", *settings, "--force"]) == 1  # the test split is scored once (the ledger)
    split_folder = workspace.stage_dir(tmp_path, "bleeding_anomaly", "split")
    x, ids = np.load(split_folder / "test_x.npy"), np.load(split_folder / "test_ids.npy")
    x[3] += 1.0  # a test window edited after the split
    np.save(split_folder / "test_x.npy", x)
    config = config_module.load("configs/bleeding_anomaly.yaml", [f"runtime.root={tmp_path}", "train.epochs=10",
                                                                  "search.n_trials=1", "search.epochs=3"])
    with pytest.raises(DataError, match=rf"changed \['{ids[3]}'\]"):
        evaluate.run(config, force=True, reuse_test=True)
