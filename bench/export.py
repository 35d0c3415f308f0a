"""Benchmark `export`: every TF-Lite variant of the digits champion on the LiteRT interpreter, from one run of
the pipeline, the edge predictor's labels against the pipeline's own TF-Lite evaluation on the test split, and
the microcontroller figures: the variant bundled for the `cortex_m4` preset on TFLite Micro (its agreement with
LiteRT on validation, measured arena, flash with the runtime's allowance, and its test accuracy on TFLM against
the Keras champion's), and the MACs and parameters of the bundled variant."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from deploy import micro
from deploy.edge.predict import LiteRTModel
from pipelines import __main__ as cli
from pipelines.core import workspace
from pipelines.data import splits

WORK = Path(__file__).parent / ".work" / "export"
VARIANTS = "[float32, dynamic_range, float16, int8, qat_int8, pruned_int8, pqat_int8, clustered_int8]"


def _edge_agreement(bundle: Path, split_folder: Path) -> float:
    """Share of test images on which `python -m deploy.edge.predict` (files on disk) gives the label that the
    pipeline's own LiteRT evaluation of the bundled model gives."""
    x = splits.split_items(split_folder, "test").array()
    images = WORK / "test_images"
    images.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(x):
        paths.append(images / f"{index:04d}.png")
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(paths[-1])
    output = subprocess.run([sys.executable, "-m", "deploy.edge.predict", str(bundle), *map(str, paths)],
                            capture_output=True, text=True, check=True, env=os.environ).stdout
    labels = (bundle / "labels.txt").read_text().split()
    pipeline = [labels[index] for index in LiteRTModel(bundle / "model.tflite").predict(x).argmax(axis=1)]
    edge = [line.split("\t")[1] for line in output.splitlines()]
    return float(np.mean([a == b for a, b in zip(edge, pipeline)])) if len(edge) == len(pipeline) else 0.0


def _tflm_test_accuracy(flatbuffer: bytes, split_folder: Path) -> float:
    """Top-1 accuracy on the test split of the flatbuffer run on TFLite Micro (what the board would compute)."""
    items = splits.split_items(split_folder, "test").array()
    y = workspace.load_arrays(split_folder, "test", "y")[0]
    model = LiteRTModel(flatbuffer)
    tensors = np.stack([model.quantize(item)[0] for item in items])
    outputs, _ = micro.tflm_run(flatbuffer, tensors)
    return float((outputs.argmax(axis=1) == np.asarray(y).reshape(-1)).mean())


def _micro_figures(table: dict, root: Path) -> dict:
    """The figures issue 17 named, for the variant bundled for the Cortex-M4 preset: from export's own outputs
    (export_table.json, the same numbers as the bundle's fit.json), plus its test accuracy on TFLM."""
    target = table["targets"]["cortex_m4"]
    chosen = target["chosen"]
    figures = {"mcu_preset_fits": int(chosen is not None),
               "macs": table["variants"][table["chosen"]]["macs"],
               "params": table["variants"][table["chosen"]]["params"]}
    if chosen is None:
        return figures
    row, cell = table["variants"][chosen], target["variants"][chosen]
    report = workspace.read_json(workspace.stage_dir(root, "digits", "evaluate") / "test_report.json")
    flatbuffer = (workspace.stage_dir(root, "digits", "export") / f"{chosen}.tflite").read_bytes()
    return {**figures, "tflm_agreement": row["tflm_top1_agreement"],
            "tflm_exact_outputs": row["tflm_exact_outputs"], "tflm_arena_bytes": row["tflm_arena_bytes"],
            "tflm_model_bytes": row["size_bytes"], "tflm_flash_bytes": cell["flash_bytes"],
            "mcu_ram_bytes": cell["ram_bytes"],
            "mcu_accuracy_drop": report["results"]["keras"]["accuracy"] -
            _tflm_test_accuracy(flatbuffer, workspace.stage_dir(root, "digits", "split"))}


def run() -> dict:
    shutil.rmtree(WORK, ignore_errors=True)
    arguments = ["all", "--config", "configs/digits.yaml", "--set", f"runtime.root={WORK}", "--set",
                 "runtime.verbose=0", "--set", f"export.variants={VARIANTS}"]
    if cli.main(arguments) != 0:
        raise RuntimeError("bench export: the pipeline failed")
    table = workspace.read_json(workspace.stage_dir(WORK, "digits", "export") / "export_table.json")
    rows, keras_accuracy = table["variants"], table["keras_val_accuracy"]
    bundle = workspace.bundle_dir(WORK, "digits")
    return {
        "int8_size_ratio": rows["int8"]["size_bytes"] / rows["float32"]["size_bytes"],
        "int8_agreement": rows["int8"]["agreement"],
        "int8_accuracy_drop": keras_accuracy - rows["int8"]["val_accuracy"],
        "pruned_sparsity": rows["pruned_int8"]["sparsity"],
        "pruned_int8_gzip_ratio": rows["pruned_int8"]["gzip_bytes"] / rows["float32"]["gzip_bytes"],
        "pruned_accuracy_drop": keras_accuracy - rows["pruned_int8"]["val_accuracy"],
        "pqat_sparsity": rows["pqat_int8"]["sparsity"],
        "pqat_int8_gzip_ratio": rows["pqat_int8"]["gzip_bytes"] / rows["float32"]["gzip_bytes"],
        "pqat_accuracy_drop": keras_accuracy - rows["pqat_int8"]["val_accuracy"],
        "int8_latency_ratio": rows["int8"]["latency_ms_median"] / rows["float32"]["latency_ms_median"],
        "int8_end_to_end_latency_ratio": rows["int8"]["end_to_end_ms_median"] / rows["float32"]["end_to_end_ms_median"],
        "float32_latency_ms": rows["float32"]["latency_ms_median"],
        "int8_latency_ms": rows["int8"]["latency_ms_median"],
        "edge_predictor_agreement": _edge_agreement(bundle, workspace.stage_dir(WORK, "digits", "split")),
        **_micro_figures(table, WORK),
    }
