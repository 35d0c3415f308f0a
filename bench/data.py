"""Benchmark `data`: analyze, clean and split on a generated folder of 10,000 images, in images per second.

The folder is made from scikit-learn's digits: each of the 1,797 digits is drawn at 32x32 several times with
a small shift and a brightness change, so every digit has a family of planted near-duplicates that the split
must keep together. Digits are low-detail: distinct digits drawn at 32x32 hash within 4 to 8 bits of each
other, so near-duplicates are taken at distance 2 here (at 8, single-link clusters chain over half the
folder and the split stage refuses the ratios). The figures include reading, hashing and writing every image.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from pipelines.core import config as config_module
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
                                       "data.path=images", "data.image_size=16",
                                       "data.near_duplicate_distance=2"])
    figures = {"images": IMAGES}
    print(f"[bench] {IMAGES} images in {work / 'images'}")
    for name, stage in (("analyze", analyze), ("clean", clean), ("split", split)):
        started = time.perf_counter()
        stage.run(config, force=True)
        figures[f"{name}_images_per_s"] = round(IMAGES / (time.perf_counter() - started), 1)
    return figures
