"""Shared fixtures: a tiny config in tmp_path (one epoch-ish, 8x8 images), run on the CPU."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests write their own store under tmp_path

import pytest  # noqa: E402

from pipelines import config as config_module  # noqa: E402

TINY = [
    "data.image_size=8",
    "model.filters=[8]",
    "model.dense_units=16",
    "train.epochs=3",
    "train.patience=2",
    "search.n_trials=1",
    "search.epochs=2",
    "export.representative_samples=32",
    "export.latency_runs=3",
    "runtime.verbose=0",
]


def tiny_config(root, *overrides):
    """The default config shrunk for a test: tiny model, few epochs, everything written under `root`."""
    return config_module.load(None, [*TINY, f"runtime.root={root}", *overrides])


@pytest.fixture
def tiny(tmp_path):
    return tiny_config(tmp_path)
