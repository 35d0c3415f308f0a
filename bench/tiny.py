"""Benchmark `tiny`: the MLPerf Tiny reference models (models/reference.py) in int8 on TFLite Micro, and the
leave-one-out error of the latency model (deploy/latency.py) on every row of the anchors file.

Per model: MACs and parameters counted from the int8 flatbuffer, its size, the arena TFLM's recording allocator
measured on the Python interpreter (the reference kernels), and the flash it needs with the runtime's allowance
(deploy/micro.py); beside them the published figures: TFLM's person-detection example reserves 136 KB of arena for
MobileNetV1 0.25 at 96x96x1, ST's model zoo reports 67.0 KiB of activations (X-CUBE-AI, not TFLM) at 96x96x3.
Int8 is calibrated on random data (calibration sets only the scales: no operator, MAC or byte changes). The
counts the latency model reads are written to deploy/anchors/reference_profiles.json, then every anchor row is
predicted by a fit without it; the relative errors are summarized in all and per kernel library.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import tf_keras as keras

from deploy import latency, micro, tflite
from models import reference

WORK = Path(__file__).parent / ".work" / "tiny"
PUBLISHED = {"person_detection_published_tflm_arena_bytes": 136 * 1024,  # TFLM person_detection main_functions.cc
             "vww_published_activation_bytes": int(67.0 * 1024)}  # stm32ai-modelzoo mobilenetv1 README, 96x96x3


def _calibrate_batch_norm(model, representative: np.ndarray) -> None:
    """Sets each batch normalization's moving mean and variance to those of its input on the calibration data,
    layer after layer, as training would: with random weights and untouched statistics the activations of a
    deep network vanish (MobileNet's logits came out near 1e-15), and TFLM's softmax cannot represent the
    multiplier of so small a scale (QuantizeMultiplierGreaterThanOne aborts the process). Values only: no
    operator, MAC or byte changes."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            inputs = keras.Model(model.input, layer.input).predict(representative, verbose=0)
            axes = tuple(range(inputs.ndim - 1))
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma, beta, inputs.mean(axis=axes), inputs.var(axis=axes) + 1e-6])


def _measure(name: str, build) -> tuple[dict, dict]:
    model = build()
    shape = tuple(model.input_shape[1:])
    rng = np.random.default_rng(0)
    representative = rng.normal(0.0, 1.0, (16, *shape)).astype(np.float32)
    _calibrate_batch_norm(model, representative)
    flatbuffer = tflite.convert(model, "int8", representative)
    cost = micro.cost(flatbuffer)
    items = rng.integers(-128, 128, (2, *shape)).astype(np.int8)
    _, arena = micro.tflm_run(flatbuffer, items)
    figures = {f"{name}_macs": cost["macs"], f"{name}_params": cost["params"], f"{name}_int8_bytes": len(flatbuffer),
               f"{name}_tflm_arena_bytes": arena,
               f"{name}_tflm_flash_bytes": len(flatbuffer) + micro.RUNTIME_FLASH["tflm"]}
    return figures, latency.profile(cost)


def run() -> dict:
    figures, profiles = {}, {}
    for name, build in reference.references().items():
        found, profiles[name] = _measure(name, build)
        figures.update(found)
    latency.PROFILES.write_text(json.dumps(profiles, indent=2, sort_keys=True) + "\n")
    figures.update(PUBLISHED)
    figures["person_detection_arena_over_published"] = \
        figures["person_detection_tflm_arena_bytes"] / PUBLISHED["person_detection_published_tflm_arena_bytes"]
    figures["vww_arena_over_published_activations"] = \
        figures["vww_tflm_arena_bytes"] / PUBLISHED["vww_published_activation_bytes"]
    errors = latency.leave_one_out(latency.anchors(), profiles)
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / "leave_one_out.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(errors[0]))
        writer.writeheader()
        writer.writerows(errors)
    for item in errors:
        print(f"{item['model']:17s} {item['board']:16s} {item['kernels']:15s} measured {item['latency_ms']:8.2f} ms "
              f"predicted {item['predicted_ms']:8.2f} ms  {item['error']:+.2f}  ({item['basis']})")
    figures["latency_model_rows"] = len(errors)
    figures.update(latency.summary(errors))
    return figures
