"""Analyze on sensor recordings: the flat-line rule at slow sampling rates, window features, and the two
classical baselines (random forest on window features, 1-NN Euclidean) in the report."""

import importlib.util

import numpy as np
import pytest

from pipelines.core import config as config_module
from pipelines.data import signals
from pipelines.data.kinds import signals as signal_kind


def _slow(signal: np.ndarray, rate: float) -> signals.Recordings:
    return signals.Recordings([signal.astype(np.float32)[:, None]], ("r0",), ("a",), rate, "synthetic",
                              labels=np.array([0]), class_names=("x",))


@pytest.mark.parametrize("rate", [0.5, 1.0, 2.0])
def test_a_slowly_sampled_smooth_signal_is_not_flat_lined_and_a_stuck_stretch_is(rate):
    time = np.arange(400)
    smooth = np.sin(2 * np.pi * time / 60)
    quantized = np.round(smooth, 2)  # a resolution of 0.01: the value repeats for a few samples at the peaks
    for signal in (smooth, quantized):
        report = signals.profile(_slow(signal, rate))
        assert report["channels"]["a"]["flat_lined"]["samples"] == 0, (rate, signal is quantized)
        stuck = signal.copy()
        stuck[100:130] = stuck[100]  # the sensor stuck for 30 samples
        flat = signals.profile(_slow(stuck, rate))["channels"]["a"]["flat_lined"]
        assert flat["count"] == 1 and flat["first"][0]["start"] <= 100 and flat["samples"] >= 30, rate


def test_the_flat_line_threshold_follows_the_rate_and_the_channels_own_repeats():
    recordings = _slow(np.round(np.sin(2 * np.pi * np.arange(400) / 60), 2), 100.0)
    assert signals.flat_samples(recordings, 0, 0.5) == 51  # 0.5 s at 100 Hz, as before
    stepped = _slow(np.repeat(np.arange(40.0), 10), 1.0)  # a coarse sensor: each value held 10 samples
    assert signals.flat_samples(stepped, 0, 0.5) == 40  # 4 x its own runs
    assert signals.profile(stepped)["channels"]["a"]["flat_lined"]["samples"] == 0


@pytest.mark.skipif(importlib.util.find_spec("aeon") is None, reason="aeon's data files are not installed")
def test_arrowhead_at_one_hertz_has_no_flat_lined_samples():
    """The issue's case: 51,971 of ArrowHead's 52,961 samples were flat-lined at 2 Hz or less. What is left are
    a few genuine plateaus of 5 or 6 equal values in series that otherwise never repeat one."""
    folder = signals.aeon_data_folder() / "ArrowHead"
    cases, labels, classes = signals.read_ts(folder / "ArrowHead_TRAIN.ts")
    more, more_labels, _ = signals.read_ts(folder / "ArrowHead_TEST.ts")
    cases, labels = cases + more, labels + more_labels
    recordings = signals.Recordings(cases, tuple(f"r{i}" for i in range(len(cases))), ("value",), 1.0, "ArrowHead",
                                    labels=np.array([classes.index(label) for label in labels]), class_names=classes)
    flat = signals.profile(recordings)["channels"]["value"]["flat_lined"]
    assert sum(len(case) for case in cases) == 52_961 and flat["samples"] < 100
    assert all(stretch["samples"] <= 6 for stretch in flat["first"])


def test_window_features_hold_the_statistics_the_slope_and_the_spectral_peaks():
    time = np.arange(64)
    ramp = 0.5 * time + 3.0
    wave = np.sin(2 * np.pi * 8 * time / 64) + 0.5 * np.sin(2 * np.pi * 20 * time / 64)
    x = np.stack([np.stack([ramp, wave], axis=1)]).astype(np.float32)
    features = signals.window_features(x, peaks=3).reshape(11, 2)  # (5 + 2 x 3 features) x 2 channels
    mean, std, low, high, slope = features[:5]
    assert np.allclose([mean[0], low[0], high[0], slope[0]], [ramp.mean(), 3.0, ramp.max(), 0.5], atol=1e-4)
    assert abs(slope[1]) < 0.01 and std[1] == pytest.approx(wave.std(), rel=1e-4)
    frequencies, amplitudes = features[5:8, 1], features[8:11, 1]
    assert np.allclose(frequencies[:2], [8 / 32, 20 / 32]) and amplitudes[0] > amplitudes[1] > 0
    assert frequencies[2] == 0 and amplitudes[2] == 0  # two peaks only


@pytest.mark.skipif(importlib.util.find_spec("aeon") is None, reason="aeon's data files are not installed")
def test_analyze_reports_a_random_forest_and_a_1nn_baseline_cross_validated_by_recording(tmp_path):
    config = config_module.from_dict({"data": {"source": "basic_motions", "window": 50, "stride": 25},
                                      "model": {"architecture": "cnn1d"}})
    report, headline = signal_kind.profile(signal_kind.read(config), config, tmp_path)
    forest, nearest = report["baselines"]["random_forest"], report["baselines"]["nearest_neighbour"]
    assert report["baseline"] is forest and "spectral peaks" in forest["model"]
    assert nearest["model"] == "1-NN Euclidean on raw windows" and nearest["cv_folds"] == forest["cv_folds"] == 3
    assert "by group" in nearest["evaluated_on"]  # windows of one recording never in two folds
    assert 0.5 < nearest["score_mean"] <= 1.0 and 0.5 < forest["score_mean"] <= 1.0
    assert headline["analyze/baseline_1nn_score"] == nearest["score_mean"]
