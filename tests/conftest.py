"""Shared fixtures: a tiny config in tmp_path (one epoch-ish, 8x8 images), run on the CPU."""

import os

os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests write their own store under tmp_path

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from pipelines.core import config as config_module  # noqa: E402

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


def stage_command(stage: str, settings: list[str]) -> list[str]:
    """`python -m pipelines <stage> --set ...` for a subprocess."""
    return [sys.executable, "-m", "pipelines", stage, *[item for setting in settings for item in ("--set", setting)]]


def sigkill_after_first_checkpoint(command: list[str], backup_root: Path, timeout: float = 180) -> None:
    """Starts `command`, waits until a `checkpoint` file appears under `backup_root`, then SIGKILLs it.

    Raises:
        AssertionError: no checkpoint was written within `timeout` seconds.
    """
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not list(backup_root.rglob("checkpoint")):
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert list(backup_root.rglob("checkpoint")), "no checkpoint was written before the kill"


def png(path: Path, size: tuple[int, int]) -> None:
    """A written plot: a PNG of the expected size in pixels that is not blank."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size, (path, image.size)
        assert np.asarray(image.convert("L"), float).std() > 5, f"{path} is blank"


@pytest.fixture
def tiny(tmp_path):
    return tiny_config(tmp_path)
