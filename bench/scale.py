"""Benchmark `scale`: peak resident memory and wall time of every stage on folders of 2,000 and 20,000 real
RGB photographs, to show that memory does not grow with the dataset when the data path streams.

The folders are random crops of five of scikit-image's bundled photographs (astronaut, coffee, chelsea,
rocket, and camera as grey RGB), one class per photograph: a random square of 30 to 90% of the shorter side
at a random position, resized to 128x128 and saved as JPEG (quality 90) under `bench/.work/scale/images-<N>/`
(reused when it already holds N files). Continuous positions and scales make every crop distinct, so clean
drops few as exact duplicates; overlapping crops of one photograph may still be near-duplicates.

For each N, each stage (analyze, clean, split, train, export, evaluate) runs in its own fresh process,
`python -m pipelines <stage> --config bench/.work/scale/scale_<label>.yaml --force`, with `runtime.root` the
work folder (the repository's data/ and mlruns/ are never touched). Peak resident memory is the child's
`ru_maxrss` from `os.wait4` on its pid, the figure GNU `/usr/bin/time -v` prints as "Maximum resident set
size" (it waits the same way); wall seconds include the process's start-up (Python, TensorFlow, MLflow).
Training is 1 epoch of 200 steps of 32 (`train.steps_per_epoch`), so its time does not grow with N; export
builds the int8 variant only, without the int8 triage, so its time does not either. Data health is on
(`health.action: report`), so analyze and split also find label issues (pipelines/data/health.py) and their
memory is measured with it.

Figures (label 2k, 20k): `peak_rss_mb_<stage>_<label>`, `seconds_<stage>_<label>`, `peak_rss_growth` (the
largest ratio of the larger N to the smaller over the stages), `max_peak_rss_mb_20k`, `<stage>_images_per_s_20k`
for analyze, clean and split (N / stage wall seconds), `default_model_params_224`, the throughput figures of
bench/streaming.py on the larger split, and the near-duplicate search figures of bench/near_duplicates.py.
`SCALE_SIZES=150,300` overrides the sizes for a smoke test (the figures are then labelled 150 and 300).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

WORK = Path(__file__).parent / ".work" / "scale"
REPOSITORY = Path(__file__).parent.parent
SIZES = (2000, 20000)
STAGES = ("analyze", "clean", "split", "train", "export", "evaluate")
SIDE, CLASSES, JPEG_QUALITY = 128, 5, 90
TRAIN_STEPS = 200
CROP_FRACTION = (0.3, 0.9)  # side of the square crop, as a fraction of the photograph's shorter side


def sizes() -> tuple[int, ...]:
    """SIZES, or the comma-separated counts in SCALE_SIZES (e.g. `SCALE_SIZES=150,300` for a smoke test)."""
    text = os.environ.get("SCALE_SIZES", "").strip()
    if not text:
        return SIZES
    values = tuple(int(part) for part in text.split(","))
    if len(values) < 2 or min(values) < 10 * CLASSES:
        raise ValueError(f"SCALE_SIZES: need at least two counts of {10 * CLASSES} or more, got {text!r}")
    return values


def label(count: int) -> str:
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)


def photographs() -> dict[str, np.ndarray]:
    """The source photographs by class name, as uint8 RGB (bundled with scikit-image; no download)."""
    from skimage import data

    photos = {name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket", "camera")}
    return {name: np.stack([image] * 3, axis=-1) if image.ndim == 2 else image[..., :3]
            for name, image in photos.items()}


def make_folder(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` JPEG crops, one sub-folder per photograph; reused when the folder already holds `count` files.

    Built in a sibling folder and renamed into place, so an interrupted run never leaves a short folder."""
    from PIL import Image

    if folder.is_dir() and sum(1 for path in folder.rglob("*") if path.is_file()) == count:
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    photos = photographs()
    rng = np.random.default_rng(seed)
    for name in photos:
        (partial / name).mkdir(parents=True)
    names = list(photos)
    for index in range(count):
        name = names[index % len(names)]
        image = photos[name]
        height, width = image.shape[:2]
        side = int(rng.uniform(*CROP_FRACTION) * min(height, width))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = Image.fromarray(image[top:top + side, left:left + side])
        crop.resize((SIDE, SIDE), Image.Resampling.BILINEAR).save(partial / name / f"{index:05d}.jpg",
                                                                 quality=JPEG_QUALITY)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def write_config(count: int) -> Path:
    """The experiment's YAML in the work folder: the generated photographs, the default model, fixed steps."""
    experiment = f"scale_{label(count)}"
    config = {
        "experiment": experiment,
        "runtime": {"root": str(WORK.resolve())},
        "data": {"source": "image_folder", "path": f"images-{count}", "image_size": SIDE, "channels": 3},
        "train": {"epochs": 1, "steps_per_epoch": TRAIN_STEPS},
        # data health on: analyze reports label issues on its thumbnails, split cross-validates over train+val
        # (features built chunk by chunk from the shards) and writes label_issues.csv
        "health": {"action": "report"},
        # int8 only (the bundle); triage_drop 1.0 turns off the slow int8 triage, whatever int8 loses.
        "export": {"variants": ["int8"], "triage_drop": 1.0, "latency_runs": 10, "micro_samples": 20},
    }
    path = WORK / f"{experiment}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_stage(stage: str, config_file: Path, logs: Path) -> dict:
    """Runs one stage in a fresh process; returns its peak resident memory (MB) and wall seconds.

    Raises:
        RuntimeError: the stage failed; the message names it and ends with the tail of its stderr.
    """
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    # a memory bench: export bundles the short-trained model whatever its gates say (they are still computed);
    # evaluate may reuse test items: the first 2,000 crops of the larger folder are the smaller folder's (same
    # seed), so the test ledger of the shared store already holds some of the larger test split
    command = [sys.executable, "-m", "pipelines", stage, "--config", str(config_file), "--force",
               *(["--allow-unblessed"] if stage == "export" else []),
               *(["--reuse-test"] if stage == "evaluate" else [])]
    out, err = logs.with_suffix(".out"), logs.with_suffix(".err")
    with open(out, "w") as stdout, open(err, "w") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=REPOSITORY, env=environment, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait for it again
    if child.returncode != 0:
        tail = (err.read_text().strip() or out.read_text().strip()).splitlines()[-25:]
        raise RuntimeError(f"stage {stage} failed (exit {child.returncode}; {config_file.name}; logs {out}, {err}):"
                           "\n" + "\n".join(tail))
    done = [line for line in out.read_text().splitlines() if line.startswith(f"[{stage}] done")]
    return {"peak_mb": usage.ru_maxrss / 1024, "seconds": seconds, "done": done[-1] if done else ""}


def measure(count: int) -> dict:
    """Every stage on `count` images, each in its own process: the figures labelled for `count`."""
    name = label(count)
    started = time.perf_counter()
    make_folder(WORK / f"images-{count}", count)
    print(f"[scale] {name}: {count} images in {WORK / f'images-{count}'} "
          f"({time.perf_counter() - started:.1f} s)", flush=True)
    config_file = write_config(count)
    (WORK / "logs").mkdir(exist_ok=True)
    figures = {}
    for stage in STAGES:
        result = run_stage(stage, config_file, WORK / "logs" / f"{name}-{stage}")
        figures[f"peak_rss_mb_{stage}_{name}"] = round(result["peak_mb"], 1)
        figures[f"seconds_{stage}_{name}"] = round(result["seconds"], 2)
        print(f"[scale] {name} {stage}: {result['seconds']:.1f} s, peak {result['peak_mb']:.0f} MB"
              f"  {result['done'][:160]}", flush=True)
    return figures


def default_model_params(side: int = 224, outputs: int = 5) -> int:
    """Parameters of the default architecture (`small_cnn`, default ModelConfig) at side x side x 3."""
    import models
    from pipelines.core import config as config_module

    models.load_tensorflow()
    normalizer = {"mean": [0.0] * 3, "variance": [1.0] * 3}
    model = models.architectures()["small_cnn"](config_module.ModelConfig(), (side, side, 3), outputs, normalizer,
                                                "classification")
    return int(model.count_params())


def throughput(count: int) -> dict:
    """Training images per second streaming from the shards against the same split in memory, and with the
    photo augmentation of configs/image_folder.example.yaml against none (see bench/streaming.py), on the
    split of `count` images."""
    from bench import streaming
    from pipelines.core import workspace

    folder = workspace.stage_dir(WORK, f"scale_{label(count)}", "split")
    return streaming.figures(folder, REPOSITORY / "configs" / "image_folder.example.yaml", TRAIN_STEPS)


def run() -> dict:
    counts = sorted(set(sizes()))
    small, large = label(counts[0]), label(counts[-1])
    for generated in ("data", "mlruns", "deploy", "logs"):  # every run starts from an empty workspace
        shutil.rmtree(WORK / generated, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    figures = {}
    for count in counts:
        figures.update(measure(count))
    figures["peak_rss_growth"] = round(max(figures[f"peak_rss_mb_{stage}_{large}"] /
                                           figures[f"peak_rss_mb_{stage}_{small}"] for stage in STAGES), 3)
    figures[f"max_peak_rss_mb_{large}"] = max(figures[f"peak_rss_mb_{stage}_{large}"] for stage in STAGES)
    for stage in ("analyze", "clean", "split"):
        figures[f"{stage}_images_per_s_{large}"] = round(counts[-1] / figures[f"seconds_{stage}_{large}"], 1)
    figures["default_model_params_224"] = default_model_params()
    figures.update(throughput(counts[-1]))
    if importlib.util.find_spec("bench.near_duplicates") is not None:
        figures.update(importlib.import_module("bench.near_duplicates").figures())
    return figures


if __name__ == "__main__":  # `python -m bench.scale`: prints the figures without touching bench/results.json
    print(json.dumps(run(), indent=2))
