"""Benchmark `memory`: peak resident memory and time of training (`fitting.fit`, 2 epochs, a small CNN) on
generated splits of 2,000 and 20,000 RGB images at 64 px in shards, each in its own process, above the same
process's memory before it loads the split. The images stream from their shards (see pipelines/data/shards.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WORK = Path(__file__).parent / ".work" / "memory"
SIZES, SIDE = (2000, 20000), 64

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
folder, n, side = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if not (folder / "dataset.json").is_file():
    from pipelines.data import shards
    rng = np.random.default_rng(0)
    writer = shards.Writer(folder / "shards", (side, side, 3))
    for name, count in (("train", n), ("val", max(200, n // 10))):
        y = rng.integers(0, 5, count)
        keys = [writer.write((rng.integers(0, 40, (side, side, 3)) + label * 40).astype(np.uint8)) for label in y]
        np.save(folder / f"{name}_keys.npy", np.array(keys))
        np.save(folder / f"{name}_y.npy", y)
    writer.close()
    (folder / "dataset.json").write_text(json.dumps({"kind": "images", "task": "classification", "shards": "shards",
        "class_names": [str(i) for i in range(5)], "input_shape": [side, side, 3]}))
    (folder / "normalizer.json").write_text(json.dumps({"mean": [100.0] * 3, "variance": [3000.0] * 3}))
    sys.exit(0)
import pipelines
from pipelines.core import config as c
from pipelines.data import splits
from pipelines.training import fitting
config = c.load(None, ["runtime.verbose=0", "train.epochs=2", "model.filters=[16,32]", "model.dense_units=32"])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
data = splits.load_split(folder)
started = time.perf_counter()
fitting.fit(config, data, 2, log_to_mlflow=False)
seconds = time.perf_counter() - started
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base,
                  "seconds": seconds}))
"""


def run() -> dict:
    figures = {}
    for n in SIZES:
        folder = WORK / f"split-{n}"
        subprocess.run([sys.executable, "-c", CHILD, str(folder), str(n), str(SIDE)], check=True)  # generate
        done = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(n), str(SIDE)], check=True,
                              capture_output=True, text=True)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        label = f"{n // 1000}k"
        figures[f"train_peak_rss_above_idle_mb_{label}"] = round(measured["peak_mb"], 1)
        figures[f"train_seconds_{label}"] = round(measured["seconds"], 2)
        figures[f"train_images_per_s_{label}"] = round(2 * n / measured["seconds"], 1)
    figures["train_peak_rss_growth"] = round(figures["train_peak_rss_above_idle_mb_20k"] /
                                             figures["train_peak_rss_above_idle_mb_2k"], 2)
    return figures
