"""The dataset's own split (`split.strategy: predefined`) for recordings, tables and image folders, recordings
shorter than a window (`data.short_recordings`), and the per-recording vote of evaluate and of the edge
predictor."""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipelines import __main__ as cli
from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.data import signals
from pipelines.data.splits import LeakageError
from pipelines.stages import clean, split
from tests.conftest import sine_recordings

GIVEN = {**{index: "train" for index in range(8)}, **{index: "test" for index in range(8, 12)}}


_recordings = sine_recordings


SENSOR = ["data.source=sensor_csv", "data.path=recordings", "data.target=activity", "data.time_column=t",
          "data.signal_channels=[ax, ay]", "data.window=20", "data.stride=10", "model.architecture=cnn1d",
          "split.val_fraction=0.2", "split.test_fraction=0.2"]


def _config(root, *overrides):
    return config_module.load(None, [f"runtime.root={root}", *SENSOR, *overrides])


def _cli(stage, root, capsys, *overrides) -> str:
    """Runs a stage through the CLI, expecting it to fail; its one line of error."""
    arguments = [stage, "--set", f"runtime.root={root}"]
    for override in (*SENSOR, *overrides):
        arguments += ["--set", override]
    assert cli.main(arguments) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # one line, no traceback
    return lines[0]


def _split_of(folder) -> dict[str, set]:
    found: dict[str, set] = {}
    for item in workspace.read_json(folder / "split_manifest.json")["items"]:
        found.setdefault(item.get("group", item["id"]), set()).add(item["split"])
    return found


@pytest.mark.parametrize("how", ["column", "file"])
def test_a_recordings_given_split_is_kept_and_val_is_carved_from_its_train_part(tmp_path, how):
    if how == "column":
        _recordings(tmp_path / "recordings", given={i: ("TEST" if s == "test" else s) for i, s in GIVEN.items()})
        overrides = ["split.strategy=predefined"]
    else:
        _recordings(tmp_path / "recordings")
        rows = "".join(f"rec{index:02d},{name}\n" for index, name in GIVEN.items())
        (tmp_path / "recordings" / "split.csv").write_text("recording,split\n" + rows)  # beside the recordings
        overrides = ["split.strategy=predefined", "split.file=recordings/split.csv"]
    config = _config(tmp_path, *overrides)
    clean.run(config)
    found = _split_of(split.run(config).folder)
    assert set(found) == {f"rec{index:02d}" for index in range(12)}  # the split file is not a recording
    assert all(len(parts) == 1 for parts in found.values())  # a recording's windows in one split
    assert {name for name, parts in found.items() if parts == {"test"}} == {f"rec{i:02d}" for i in range(8, 12)}
    val = {name for name, parts in found.items() if parts == {"val"}}
    assert val and val < {f"rec{i:02d}" for i in range(8)}  # carved from the given train part only
    labels = {("slow", "fast")[int(name[3:]) % 2] for name in val}
    assert labels == {"slow", "fast"}  # stratified


def test_a_given_val_part_is_kept_too(tmp_path):
    given = {**GIVEN, 6: "validation", 7: "val"}
    _recordings(tmp_path / "recordings", given=given)
    config = _config(tmp_path, "split.strategy=predefined")
    clean.run(config)
    found = _split_of(split.run(config).folder)
    assert {name: parts.pop() for name, parts in found.items()} == {
        f"rec{i:02d}": {"validation": "val"}.get(name, name) for i, name in given.items()}


def test_a_recording_copied_into_the_test_part_still_stops_the_split_with_the_leakage_error(tmp_path):
    _recordings(tmp_path / "recordings", given=GIVEN)
    copy = pd.read_csv(tmp_path / "recordings" / "rec00.csv").assign(split="test")
    copy.to_csv(tmp_path / "recordings" / "rec10.csv", index=False)  # rec00 (train) again, given as test
    config = _config(tmp_path, "split.strategy=predefined")
    clean.run(config)
    with pytest.raises(LeakageError, match=r"spans splits: .*rec00@0 \(train\).*rec10@0 \(test\)"):
        split.run(config)
    assert not (workspace.stage_dir(tmp_path, config.experiment, "split") / "split_manifest.json").exists()


def test_one_recording_given_two_splits_stops_naming_the_file_line_and_recording(tmp_path, capsys):
    _recordings(tmp_path / "recordings", given=GIVEN)
    path = tmp_path / "recordings" / "rec03.csv"
    frame = pd.read_csv(path)
    frame.loc[50:, "split"] = "test"
    frame.to_csv(path, index=False)
    line = _cli("clean", tmp_path, capsys, "split.strategy=predefined")
    assert re.search(r"rec03\.csv: line 52, column 'split': recording 'rec03' is in both train and test", line), line


@pytest.mark.parametrize("value, message", [
    ("holdout", r"rec03\.csv: line 2, column 'split': split value 'holdout' is not train, val or test"),
    ("", r"rec03\.csv: line 2, column 'split': no split value"),
])
def test_an_unknown_or_missing_split_value_is_one_line_naming_the_file_and_value(tmp_path, capsys, value, message):
    _recordings(tmp_path / "recordings", given=GIVEN)
    path = tmp_path / "recordings" / "rec03.csv"
    pd.read_csv(path).assign(split=value).to_csv(path, index=False)
    assert re.search(message, _cli("clean", tmp_path, capsys, "split.strategy=predefined"))


def test_a_split_file_without_a_recording_or_without_the_column_is_named(tmp_path, capsys):
    _recordings(tmp_path / "recordings")
    rows = "".join(f"rec{index:02d},{name}\n" for index, name in GIVEN.items() if index != 5)
    (tmp_path / "split.csv").write_text("recording,split\n" + rows)
    line = _cli("clean", tmp_path, capsys, "split.strategy=predefined", "split.file=split.csv")
    assert re.search(r"split\.csv: no row for recording 'rec05' \(read from .*rec05\.csv\)", line), line
    _recordings(tmp_path / "recordings")  # no split column at all
    assert re.search(r"rec00\.csv: no column 'split'", _cli("clean", tmp_path, capsys, "split.strategy=predefined"))


def test_a_tables_split_column_is_kept_exactly_and_is_no_feature(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = 120
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows), "y": np.arange(rows) % 2,
                          "split": np.where(np.arange(rows) < 90, "train", "test")})
    frame.loc[80:89, "split"] = "val"
    frame.to_csv(tmp_path / "table.csv", index=False)
    config = config_module.load(None, [f"runtime.root={tmp_path}", "data.source=csv", "data.path=table.csv",
                                       "data.target=y", "model.architecture=mlp", "split.strategy=predefined"])
    clean.run(config)
    folder = split.run(config).folder
    found = {item["id"]: item["split"] for item in workspace.read_json(folder / "split_manifest.json")["items"]}
    expected = {f"row-{index + 2}": name for index, name in enumerate(frame["split"])}
    assert found == expected
    assert "split" not in " ".join(workspace.read_json(folder / "dataset.json")["feature_names"])
    copied = frame.copy()
    copied.loc[100, ["a", "b", "y"]] = frame.loc[0, ["a", "b", "y"]].to_numpy()  # a training row again, in test
    copied.to_csv(tmp_path / "table.csv", index=False)
    clean.run(config)
    with pytest.raises(LeakageError, match=r"content spans splits: row-102 \(test\), row-2 \(train\)"):
        split.run(config)
    frame.loc[5, "split"] = "tset"
    frame.to_csv(tmp_path / "table.csv", index=False)
    arguments = ["clean", "--set", f"runtime.root={tmp_path}", "--set", "data.source=csv", "--set",
                 "data.path=table.csv", "--set", "data.target=y", "--set", "model.architecture=mlp", "--set",
                 "split.strategy=predefined"]
    assert cli.main(arguments) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(r"table\.csv: line 7, column 'split': split value 'tset'", lines[0]), lines


def test_an_image_folders_train_and_test_sub_folders_are_kept(tmp_path):
    rng = np.random.default_rng(0)
    for part, count in (("train", 10), ("test", 4)):
        for name in ("dark", "light"):
            folder = tmp_path / "images" / part / name
            folder.mkdir(parents=True)
            for index in range(count):
                base = 40 if name == "dark" else 200
                pixels = np.clip(base + rng.normal(0, 40, (16, 16)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    config = config_module.load(None, [f"runtime.root={tmp_path}", "data.source=image_folder", "data.path=images",
                                       "data.image_size=16", "split.strategy=predefined"])
    clean.run(config)
    items = workspace.read_json(split.run(config).folder / "split_manifest.json")["items"]
    assert {item["id"] for item in items if item["split"] == "test"} == \
        {f"test/{name}/{index}.png" for name in ("dark", "light") for index in range(4)}
    val = [item["id"] for item in items if item["split"] == "val"]
    assert val and all(item.startswith("train/") for item in val)
    # a training image copied into the test folder is not quietly dropped as a duplicate: the leakage check stops
    shutil.copy(tmp_path / "images" / "train" / "dark" / "3.png", tmp_path / "images" / "test" / "dark" / "9.png")
    clean.run(config)
    with pytest.raises(LeakageError, match=r"spans splits: test/dark/9.png \(test\), train/dark/3.png \(train\)"):
        split.run(config)
    (tmp_path / "images" / "test" / "dark" / "9.png").unlink()
    (tmp_path / "images" / "holdout").mkdir()
    with pytest.raises(Exception, match=r"images: split.strategy predefined needs train/ and test/.*'holdout'"):
        clean.run(config, force=True)


# recordings shorter than a window

def _short(tmp_path, samples: int = 15):
    _recordings(tmp_path / "recordings")
    path = tmp_path / "recordings" / "rec03.csv"
    pd.read_csv(path).iloc[:samples].to_csv(path, index=False)


def test_a_short_recording_stops_by_default_in_one_line_naming_it_and_its_length_against_the_window(tmp_path, capsys):
    _short(tmp_path)
    line = _cli("clean", tmp_path, capsys)
    assert re.search(r"rec03\.csv: recording 'rec03' has 15 samples, fewer than the window of 20", line), line


@pytest.mark.parametrize("mode", ["edge", "zeros"])
def test_a_short_recording_is_padded_to_one_window_by_rule(tmp_path, mode):
    _short(tmp_path)
    config = _config(tmp_path, "data.short_recordings=pad", f"data.pad_mode={mode}")
    folder = clean.run(config).folder
    x, ids = workspace.load_arrays(folder, "clean", "x", "ids")
    window = x[list(ids).index("rec03@0")]
    assert [item for item in ids if item.startswith("rec03@")] == ["rec03@0"]  # one window
    raw = pd.read_csv(tmp_path / "recordings" / "rec03.csv")[["ax", "ay"]].to_numpy(np.float32)
    np.testing.assert_array_equal(window[:15], raw)
    np.testing.assert_array_equal(window[15:], np.repeat(raw[-1:], 5, axis=0) if mode == "edge" else 0.0)
    log = (folder / "cleaning_log.csv").read_text()
    assert re.search(rf"rec03,short_recordings=pad,changed,\"?15 samples, fewer than the window of 20: padded "
                     rf"\({mode}\) to 20", log), log
    assert json.loads((folder / "dataset.json").read_text())["short_recordings"] == "pad"


def test_a_short_recording_is_skipped_by_rule_with_a_count_in_the_cleaning_log(tmp_path):
    _short(tmp_path)
    folder = clean.run(_config(tmp_path, "data.short_recordings=skip")).folder
    ids, = workspace.load_arrays(folder, "clean", "ids")
    assert not [item for item in ids if item.startswith("rec03@")] and len(ids) == 11 * 11
    log = (folder / "cleaning_log.csv").read_text()
    assert "rec03,short_recordings=skip,dropped" in log
    assert "1 of 12 recordings shorter than the window of 20 left out" in log


def test_the_edge_predictor_pads_a_short_recording_as_clean_did():
    import deploy.edge.predict as edge

    samples = np.arange(10, dtype=np.float32).reshape(5, 2)
    raw = signals.Recordings([samples], ("r",), ("a", "b"), 10.0, "test", labels=np.array([0]), class_names=("x",))
    padded, found = signals.fit_lengths(raw, 8, "pad", "edge")
    assert found == [("r", 5)]
    np.testing.assert_array_equal(padded.signals[0], edge.pad_recording(samples, 8, "edge"))
    np.testing.assert_array_equal(padded.signals[0][5:], np.repeat(samples[-1:], 3, axis=0))


# the per-recording vote

@pytest.mark.parametrize("rule", ["mean", "majority"])
def test_evaluate_and_the_edge_predictor_give_each_recording_the_same_vote(tmp_path, rule):
    import tensorflow as tf
    import tf_keras

    import deploy.edge.predict as edge
    from pipelines.training import evaluation

    tf_keras.utils.set_random_seed(3)
    model = tf_keras.Sequential([tf_keras.Input((20, 2)), tf_keras.layers.Conv1D(6, 3, activation="tanh"),
                                 tf_keras.layers.GlobalAveragePooling1D(),
                                 tf_keras.layers.Dense(3, activation="softmax")])
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    (bundle / "labels.txt").write_text("a\nb\nc\n")
    (bundle / "metadata.json").write_text(json.dumps({"task": "classification", "preprocessing": {
        "kind": "signal", "channels": ["ax", "ay"], "window": 20, "stride": 5, "recording_vote": rule}}))
    rng = np.random.default_rng(1)
    folder = tmp_path / "recordings"
    folder.mkdir()
    for index in range(6):
        values = rng.normal(0, 3, (60 + 7 * index, 2)).cumsum(axis=0)
        frame = pd.DataFrame({"ax": values[:, 0], "ay": values[:, 1], "label": "ab"[index % 2]})
        frame.to_csv(folder / f"r{index}.csv", index=False)
    paths = sorted(str(path) for path in folder.glob("*.csv"))
    printed = edge.predict(bundle, paths)
    device = {line[0]: line[1] for line in printed if "@" not in line[0]}
    # evaluate's side: the windows as clean cuts them, the same interpreter, evaluate's per-recording vote
    recordings = signals.load_csv(folder, ("ax", "ay"), 20, label_column="label", sampling_rate_hz=10.0)
    windows = signals.windows(recordings, 20, 5)
    outputs = edge.LiteRTModel(bundle / "model.tflite").predict(windows.x)
    ids = [f"{recordings.ids[owner]}@{start}" for owner, start in zip(windows.recording, windows.start)]
    fixed = {"bootstrap_resamples": 50, "confidence": 0.95, "seed": 0}
    found = evaluation.per_recording(windows.label, {"int8": outputs}, ids, rule, None, fixed)
    evaluated = {name: "abc"[label] for name, label in zip(found["ids"], found["predicted"]["int8"])}
    assert len(device) == 6 and evaluated == {Path(path).stem: label
                                              for path, label in device.items()}
    assert len(set(device.values())) > 1  # the random model does not answer one class for all
    assert len([line for line in printed if "@" in line[0]]) == len(ids)  # the same windows


def test_majority_and_mean_votes_can_differ_and_the_interval_is_over_recordings():
    import deploy.edge.predict as edge
    from pipelines.training import evaluation

    scores = np.array([[0.55, 0.45], [0.55, 0.45], [0.0, 1.0]])  # two windows say 0 weakly, one says 1 strongly
    assert edge.vote(scores, rule="majority")[0] == 0 and edge.vote(scores, rule="mean")[0] == 1
    assert evaluation.wilson(10, 10, 0.95)[0] == pytest.approx(0.722, abs=1e-3)  # 10 of 10 recordings
    low, high = evaluation.wilson(25, 30, 0.95)
    assert low < 25 / 30 < high and high - low > 0.2


@pytest.mark.skipif(importlib.util.find_spec("aeon") is None, reason="the archive ships inside the aeon wheel")
def test_the_bench_converts_an_archive_dataset_into_recordings_with_its_own_split(tmp_path):
    from bench import sensors as bench

    channels, longest = bench.convert("GunPoint", tmp_path / "GunPoint")
    assert (channels, longest) == (1, 150)
    recordings = signals.load_csv(tmp_path / "GunPoint" / "recordings", ("c0",), longest, label_column="label",
                                  sampling_rate_hz=1.0, split_file=tmp_path / "GunPoint" / "split.csv")
    assert len(recordings.ids) == 200 and recordings.class_names == ("1", "2")
    assert recordings.given_split.count("train") == 50 and recordings.given_split.count("test") == 150
    cases, labels, _ = signals.read_ts(signals.aeon_data_folder() / "GunPoint" / "GunPoint_TEST.ts")
    position = recordings.ids.index("test-0007")
    np.testing.assert_allclose(recordings.signals[position], cases[7], rtol=1e-6)
    assert recordings.class_names[recordings.labels[position]] == labels[7]


def test_validation_carved_from_a_small_given_train_part_holds_every_class():
    from pipelines.data import splits

    labels = np.repeat(np.arange(10), 7)  # 5 training and 2 test items per class (PickupGestureWiimoteZ's shape)
    given_split = np.array((["train"] * 5 + ["test"] * 2) * 10)
    rules = config_module.load(None, ["data.source=basic_motions", "model.architecture=cnn1d",
                                      "split.strategy=predefined"]).split
    parts = splits.predefined(given_split, labels, np.arange(len(labels)), rules)
    assert np.array_equal(parts["test"], np.flatnonzero(given_split == "test"))
    assert sorted(labels[parts["val"]].tolist()) == list(range(10))  # one of each class
    assert len(parts["train"]) == 40
