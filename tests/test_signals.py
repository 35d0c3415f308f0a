"""Sensor recordings: the embedded loaders, CSV input and its errors, windows, the profile, and splits that never
share a recording or a stretch of time."""

import importlib.util
import sys

import numpy as np
import pytest

from pipelines.core.errors import DataError
from pipelines.data import signals

needs_aeon = pytest.mark.skipif(importlib.util.find_spec("aeon") is None,
                                reason="aeon's data files are not installed (pip install --no-deps aeon==1.6.0)")


@needs_aeon
def test_basic_motions_pools_the_uea_train_and_test_files():
    recordings = signals.load_embedded("basic_motions")
    assert len(recordings.signals) == 80 and recordings.task == "classification"
    assert all(signal.shape == (100, 6) and signal.dtype == np.float32 for signal in recordings.signals)
    assert recordings.class_names == ("Standing", "Running", "Walking", "Badminton")
    assert np.bincount(recordings.labels).tolist() == [20, 20, 20, 20]
    assert recordings.ids[7] == "BasicMotions_TRAIN-0007" and recordings.ids[79] == "BasicMotions_TEST-0039"
    assert recordings.sampling_rate_hz == 10.0 and len(recordings.channels) == 6
    assert "aeon" not in sys.modules  # its files are read, the package is never imported


@needs_aeon
def test_the_ts_reader_agrees_with_scipys_arff_reader():
    from scipy.io import arff

    recordings = signals.load_embedded("basic_motions")
    data, _ = arff.loadarff(signals.aeon_data_folder() / "BasicMotions" / "BasicMotions_TRAIN.arff")
    # scipy reads the relational attribute: per case, one record per channel with one field per time step.
    cases = np.stack([np.array(row["relationalAtt"].tolist()).T for row in data])
    assert np.allclose(cases, np.stack(recordings.signals[:40]), atol=1e-6)
    assert [name.decode() for name in data["activity"]] == [recordings.class_names[i] for i in recordings.labels[:40]]


@needs_aeon
def test_internal_bleeding_is_one_stream_with_one_labelled_anomaly():
    recordings = signals.load_embedded("internal_bleeding")
    assert recordings.ids == ("InternalBleeding16",) and recordings.task == "anomaly"
    assert recordings.signals[0].shape == (7501, 1) and recordings.sample_labels[0].shape == (7501,)
    assert recordings.class_names == ("normal", "anomaly")
    labels = recordings.sample_labels[0]
    assert labels.sum() == 12 and np.flatnonzero(np.diff(labels)).tolist() == [4186, 4198]  # one stretch of 12


def _write(path, text):
    path.write_text(text.strip() + "\n")
    return path


def test_bad_csv_input_names_the_file_line_column_and_recording(tmp_path):
    header = "id,t,ax,ay,label\n"
    rows = "".join(f"r1,{t / 10},{t},{-t},walk\n" for t in range(6))
    good = _write(tmp_path / "good.csv", header + rows)
    with pytest.raises(DataError, match=r"good\.csv: no column 'gz'"):
        signals.load_csv(good, ["ax", "gz"], 4, recording_column="id")
    bad = _write(tmp_path / "bad.csv", header + rows.replace("r1,0.3,3,-3", "r1,0.3,3,oops"))
    with pytest.raises(DataError, match=r"bad\.csv: line 5, column 'ay': 'oops' is not a number"):
        signals.load_csv(bad, ["ax", "ay"], 4, recording_column="id", sampling_rate_hz=10)
    with pytest.raises(DataError, match=r"good\.csv: recording 'r1' has 6 samples, fewer than the window of 8"):
        signals.load_csv(good, ["ax", "ay"], 8, recording_column="id", time_column="t")
    changed = _write(tmp_path / "changed.csv", header + rows.replace("0.4,4,-4,walk", "0.4,4,-4,run"))
    with pytest.raises(DataError, match=r"changed\.csv: line 6, column 'label': recording 'r1' changes label"):
        signals.load_csv(changed, ["ax"], 4, recording_column="id", time_column="t", label_column="label")
    unlabeled = _write(tmp_path / "unlabeled.csv", header + rows.replace("0.5,5,-5,walk", "0.5,5,-5,"))
    with pytest.raises(DataError, match=r"unlabeled\.csv: line 7, column 'label': empty"):
        signals.load_csv(unlabeled, ["ax"], 4, recording_column="id", time_column="t", label_column="label")
    backwards = _write(tmp_path / "backwards.csv", header + rows.replace("r1,0.2,", "r1,0.05,"))
    with pytest.raises(DataError, match=r"backwards\.csv: line 4: time does not increase within recording 'r1'"):
        signals.load_csv(backwards, ["ax"], 4, recording_column="id", time_column="t")


def test_a_folder_of_files_and_one_long_file_give_the_same_recordings(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    long_rows = []
    for name, label, scale in (("a", "run", 1.0), ("b", "walk", 2.0), ("c", "run", 3.0)):
        rows = [f"{t * 0.02:.2f},{scale * t},{-scale * t},{label}" for t in range(10)]
        _write(folder / f"{name}.csv", "t,ax,ay,label\n" + "\n".join(rows))
        long_rows += [f"{name},{row}" for row in rows]
    long = _write(tmp_path / "long.csv", "id,t,ax,ay,label\n" + "\n".join(long_rows))
    from_folder = signals.load_csv(folder, ["ax", "ay"], 5, time_column="t", label_column="label")
    from_file = signals.load_csv(long, ["ax", "ay"], 5, time_column="t", label_column="label", recording_column="id")
    for recordings in (from_folder, from_file):
        assert recordings.ids == ("a", "b", "c") and recordings.class_names == ("run", "walk")
        assert recordings.labels.tolist() == [0, 1, 0] and recordings.sampling_rate_hz == pytest.approx(50.0)
        assert np.array_equal(recordings.signals[2][:, 1], -3.0 * np.arange(10, dtype=np.float32))
    assert from_folder.files[1].endswith("b.csv") and from_file.files[1].endswith("long.csv")


def test_excluded_annotations_cut_a_stream_into_segments(tmp_path):
    # Daphnet's UCI convention: 0 outside the experiment (dropped), 1 normal, 2 freezing of gait.
    annotation = [0, 0, 1, 1, 2, 2, 1, 0, 1, 1, 1, 1]
    rows = "\n".join(f"{15.625 * t},{t},{2 * t},{a}" for t, a in enumerate(annotation))
    path = _write(tmp_path / "S01R01.csv", "ms,ankle,trunk,annotation\n" + rows)
    recordings = signals.load_csv(path, ["ankle", "trunk"], 3, time_column="ms", time_unit_s=0.001,
                                  label_column="annotation", label_per="sample", anomaly_values=("2",),
                                  exclude_values=("0",))
    assert recordings.ids == ("S01R01-seg00", "S01R01-seg01") and recordings.sampling_rate_hz == pytest.approx(64.0)
    assert recordings.signals[0][:, 0].tolist() == [2, 3, 4, 5, 6]
    assert recordings.signals[1][:, 0].tolist() == [8, 9, 10, 11]
    assert recordings.sample_labels[0].tolist() == [0, 0, 1, 1, 0] and recordings.sample_labels[1].sum() == 0


def _recordings(lengths, labels=None, sample_labels=None, rate=10.0):
    signals_ = [np.stack([np.arange(n, dtype=np.float32), np.sin(np.arange(n, dtype=np.float32))], axis=1)
                for n in lengths]
    return signals.Recordings(signals_, tuple(f"r{i}" for i in range(len(lengths))), ("a", "b"), rate, "test",
                              labels=None if labels is None else np.asarray(labels), sample_labels=sample_labels,
                              class_names=("x", "y") if labels is not None else ("normal", "anomaly"))


def test_windows_carry_the_recordings_label_or_the_anomalous_share():
    classified = signals.windows(_recordings([10, 7], labels=[1, 0]), 4, 2)
    assert classified.x.shape == (6, 4, 2) and classified.x.dtype == np.float32
    assert classified.recording.tolist() == [0, 0, 0, 0, 1, 1] and classified.start.tolist() == [0, 2, 4, 6, 0, 2]
    assert classified.label.tolist() == [1, 1, 1, 1, 0, 0]
    assert np.array_equal(classified.x[3, :, 0], [6, 7, 8, 9])
    marks = np.array([0, 0, 0, 1, 1, 1, 0, 0], dtype=np.int8)
    anomalous = signals.windows(_recordings([8], sample_labels=[marks]), 4, 1, anomaly_share=0.5)
    assert anomalous.label.tolist() == [0, 1, 1, 1, 1]  # 1/4, 2/4, 3/4, 3/4, 2/4 anomalous samples
    with pytest.raises(DataError, match="recording 'r1' has 7 samples, fewer than the window of 8"):
        signals.windows(_recordings([10, 7], labels=[1, 0]), 8, 2)


def test_windows_with_a_missing_sample_are_left_out():
    recordings = _recordings([10], labels=[0])
    recordings.signals[0][5, 1] = np.nan
    assert signals.windows(recordings, 4, 2).start.tolist() == [0, 6]


def test_profile_finds_missing_flat_lined_and_clipped_stretches_and_jitter():
    recordings = _recordings([40, 30], labels=[0, 1])
    recordings.signals[0][10:17, 1] = 0.25  # 0.7 s of one value: flat-lined (longer than 0.5 s)
    recordings.signals[1][5:9, 1] = 3.0  # the channel's maximum for 4 samples: clipped
    recordings.signals[1][20, 0] = np.nan
    recordings.times = [np.arange(40) / 10.0, np.cumsum(np.r_[0.0, np.tile([0.09, 0.11], 15)[:29]])]
    report = signals.profile(recordings)
    channel = report["channels"]["b"]
    # The 0.4 s plateau at the maximum is clipped, not flat-lined; only the 0.7 s stretch is.
    assert channel["flat_lined"]["first"] == [{"recording": "r0", "start": 10, "samples": 7}]
    assert channel["clipped"]["first"] == [{"recording": "r1", "start": 5, "samples": 4}] and channel["max"] == 3.0
    assert report["channels"]["a"]["missing"] == 1 and report["channels"]["b"]["missing"] == 0
    steps = np.diff(recordings.times[1])  # 0.09 s and 0.11 s in turn
    assert report["timing"]["jitter_max_recording"] == "r1" and report["timing"]["jitter_median"] > 0.05
    assert report["timing"]["jitter_max"] == pytest.approx(steps.std() / np.median(steps))
    assert report["recordings_per_class"] == {"x": 1, "y": 1} and report["lengths"]["total_samples"] == 70


def test_grouped_split_never_puts_a_recording_in_two_splits():
    rng = np.random.default_rng(0)
    recording = np.repeat(np.arange(40), rng.integers(3, 9, 40))
    labels = (recording % 4)
    parts = signals.grouped_split(recording, labels, 0.2, 0.2, seed=0)
    owners = [set(recording[parts[name]].tolist()) for name in signals.SPLITS]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    assert sum(len(part) for part in parts.values()) == len(recording)
    assert all(len(set(labels[parts[name]].tolist())) == 4 for name in signals.SPLITS)  # stratified by class
    unlabeled = signals.grouped_split(recording, None, 0.2, 0.2, seed=0)
    assert not set(recording[unlabeled["test"]].tolist()) & set(recording[unlabeled["train"]].tolist())
    with pytest.raises(DataError, match="3 recordings"):
        signals.grouped_split(np.arange(3), None, 0.2, 0.2, seed=0)


def test_temporal_split_puts_every_test_window_after_every_train_and_val_window_of_its_stream():
    recordings = _recordings([200, 130], sample_labels=[np.zeros(200, np.int8), np.zeros(130, np.int8)])
    length = 16
    cut = signals.windows(recordings, length, 5)
    parts = signals.temporal_split(cut.recording, cut.start, length, 0.2, 0.2)
    assert not set(parts["train"]) & set(parts["val"]) and not set(parts["val"]) & set(parts["test"])
    for stream in (0, 1):
        spans = {name: (cut.start[index], cut.start[index] + length)
                 for name in signals.SPLITS for index in [parts[name][cut.recording[parts[name]] == stream]]}
        assert spans["train"][1].max() <= spans["val"][0].min()
        assert max(spans["train"][1].max(), spans["val"][1].max()) <= spans["test"][0].min()
    dropped = np.setdiff1d(np.arange(len(cut.start)), np.concatenate(list(parts.values())))
    assert 0 < len(dropped) < len(cut.start) // 4  # only the windows that straddle a cut
