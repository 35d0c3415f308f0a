"""Benchmark `data`: analyze, clean and split on a generated folder of 10,000 images, in images per second.

The folder is made from scikit-learn's digits: each of the 1,797 digits is drawn at 32x32 several times with
a small shift and a brightness change, so every digit has a family of planted near-duplicates that the split
must keep together. `near_duplicate_recall` is the share of same-family pairs that clean puts in one cluster,
`near_duplicate_precision` the share of pairs within a cluster that come from one family (distinct digits
are low-detail and look much alike, which is what the verification step is for). The throughput figures
include reading, hashing, verifying and writing every image.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.stages import analyze, clean, split

IMAGES = 10_000


def make_folder(folder: Path, count: int = IMAGES, seed: int = 0) -> None:
    digits = load_digits()
    rng = np.random.default_rng(seed)
    for name in digits.target_names:
        (folder / str(name)).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        source = index % len(digits.images)
        pixels = np.rint(digits.images[source] * (255.0 / 16.0)).astype(np.uint8)
        image = Image.fromarray(pixels).resize((32, 32), Image.Resampling.BICUBIC)
        shifted = np.roll(np.asarray(image), tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
        bright = np.clip(shifted * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
        Image.fromarray(bright).save(folder / str(digits.target[source]) / f"{index:05d}.png")


def run() -> dict:
    work = Path(__file__).parent / ".work" / "data"
    shutil.rmtree(work, ignore_errors=True)
    make_folder(work / "images")
    config = config_module.load(None, [f"runtime.root={work}", "experiment=bench_data", "data.source=image_folder",
                                       "data.path=images", "data.image_size=16"])
    figures = {"images": IMAGES}
    print(f"[bench] {IMAGES} images in {work / 'images'}")
    for name, stage in (("analyze", analyze), ("clean", clean), ("split", split)):
        started = time.perf_counter()
        stage.run(config, force=True)
        figures[f"{name}_images_per_s"] = round(IMAGES / (time.perf_counter() - started), 1)
    figures.update(cluster_quality(workspace.stage_dir(work, config.experiment, "clean")))
    return figures


def cluster_quality(folder: Path) -> dict:
    """Pairwise recall and precision of the clusters against the planted families (file index mod 1,797)."""
    ids, cluster = workspace.load_arrays(folder, "clean", "ids", "cluster")
    families = len(load_digits().images)
    family = np.array([int(Path(item).stem) % families for item in ids])

    def pairs(*keys: np.ndarray) -> int:  # item pairs that agree on every key
        _, counts = np.unique(np.stack(keys, axis=1), axis=0, return_counts=True)
        return int((counts * (counts - 1) // 2).sum())

    same_family, same_cluster, both = pairs(family), pairs(cluster), pairs(family, cluster)
    return {"near_duplicate_recall": round(both / max(same_family, 1), 4),
            "near_duplicate_precision": round(both / max(same_cluster, 1), 4)}
