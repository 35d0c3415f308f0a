"""1-D augmentation of sensor windows: seeded, on the images' switch (`augment.transforms`), applied to the
training windows only."""

import numpy as np
import pytest

from pipelines.core import config as config_module
from pipelines.core.config import ConfigError
from pipelines.data import augment, readers, splits
from pipelines.training import fitting

ALL = [{"name": "jitter", "p": 1.0}, {"name": "scaling", "p": 1.0}, {"name": "magnitude_warp", "p": 1.0},
       {"name": "time_warp", "p": 1.0}, {"name": "window_slice", "p": 1.0}]


def _config(transforms, **model):
    return config_module.from_dict({"data": {"source": "basic_motions"},
                                    "model": {"architecture": "cnn1d", **model},
                                    "augment": {"transforms": transforms, "seed": 3}})


def _windows(count=8, length=40, channels=2):
    time = np.arange(length) / 10.0
    return np.stack([np.stack([np.sin(2 * np.pi * 0.5 * time + item + channel) * (1 + channel)
                               for channel in range(channels)], axis=1) for item in range(count)]).astype(np.float32)


@pytest.mark.parametrize("name", [spec["name"] for spec in ALL])
def test_each_transform_changes_a_window_and_is_reproducible_with_its_seed(name):
    windows = _windows()
    compose = augment.build(_config([{"name": name, "p": 1.0}]).augment)
    assert isinstance(compose, augment.SignalCompose)
    first = augment.apply_batch(compose, windows)
    assert first.shape == windows.shape and first.dtype == windows.dtype
    assert np.abs(first - windows).max() > 1e-3
    compose.set_random_seed(3)
    again = augment.apply_batch(compose, windows)
    compose.set_random_seed(4)
    other = augment.apply_batch(compose, windows)
    compose.set_random_seed(3)
    assert np.array_equal(augment.apply_batch(compose, windows), again) and not np.array_equal(again, other)


def test_the_seeded_training_stream_is_the_same_for_the_same_seed_and_differs_from_the_raw_windows():
    windows, labels = _windows(16), np.arange(16) % 2
    settings = _config(ALL).augment

    def stream(seed):
        batches = augment.dataset(windows, labels, 4, seed, augment.build(settings))
        return [(x.numpy(), y.numpy()) for x, y in batches]

    first, second = stream(0), stream(0)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, second))
    raw = [(x.numpy(), y.numpy()) for x, y in augment.dataset(windows, labels, 4, 0, None)]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, raw))  # same order, same labels
    assert all(np.abs(a[0] - b[0]).max() > 1e-3 for a, b in zip(first, raw))  # other values


def test_training_augments_the_training_windows_and_never_the_validation_windows(monkeypatch):
    """Every window carries its identity in its first sample; fit records which windows went through the
    augmentation: all training windows, no validation window."""
    train, val = _windows(12, 32, 2), _windows(6, 32, 2)
    train[:, 0, 0], val[:, 0, 0] = np.arange(12) + 100, np.arange(6) + 200
    config = config_module.replace_path(_config(ALL, filters=[4], kernel_sizes=[3]), "train.epochs", 2)
    seen = []
    original = augment.apply_batch

    def recording(compose, items):
        seen.extend(items[:, 0, 0].tolist())
        return original(compose, items)

    monkeypatch.setattr(augment, "apply_batch", recording)
    data = splits.SplitData(x={"train": readers.ArrayReader(train), "val": readers.ArrayReader(val)},
                            y={"train": np.arange(12) % 2, "val": np.arange(6) % 2},
                            dataset={"task": "classification", "class_names": ["a", "b"]},
                            normalizer={"mean": [0.0, 0.0], "variance": [1.0, 1.0]})
    fitting.fit(config, data, epochs=2, log_to_mlflow=False)
    assert sorted(set(seen)) == list(range(100, 112))  # each training window, every epoch
    assert len(seen) == 24
    unaugmented = np.concatenate([x.numpy() for x, _ in augment.batches(val, np.zeros(6), 4)])
    assert np.array_equal(unaugmented, val)  # the evaluation stream of a split passes windows as they are


def test_signal_transforms_are_checked_at_load():
    with pytest.raises(ConfigError, match=r"augment.transforms\[0\]: signals take the 1-D transforms"):
        _config([{"name": "HorizontalFlip"}])
    with pytest.raises(ConfigError, match=r"augment.transforms\[0\] \(jitter\): unknown argument 'sigam'"):
        _config([{"name": "jitter", "sigam": 0.1}])
    with pytest.raises(ConfigError, match=r"\(window_slice\)\.ratio: must be a number in \(0, 1\]"):
        _config([{"name": "window_slice", "ratio": 1.5}])
    with pytest.raises(ConfigError, match="'jitter' is a 1-D transform for signals"):
        config_module.from_dict({"augment": {"transforms": [{"name": "jitter"}]}})
