"""Benchmark `latency`: batch-1 latency of float32 and int8 TF-Lite models on LiteRT, per thread count, with
XNNPACK (LiteRT's default delegate) and without it (the builtin kernels), beside the CPU that measured it.

Models (random weights: latency does not depend on the values): the project's default digits CNN at 16 px, and
MobileNetV2 (alpha 0.35) at 96 px from `keras.applications` with `weights=None`. Int8 is calibrated on random
images. Whether int8 is faster depends on the CPU's instruction sets (VNNI, for one) and on the kernels:
the figures hold for the machine named in the entry's `hardware`, nowhere else.
"""

from __future__ import annotations

import time

import numpy as np
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import models
from deploy import tflite
from pipelines.core import config as config_module

RUNS, WARMUP, THREADS = 200, 20, (1, 2)


def _models() -> dict:
    settings = config_module.load("configs/digits.yaml", []).model
    digits = models.architectures()[settings.architecture](settings, (16, 16, 1), 10,
                                                           {"mean": [0.0], "variance": [1.0]}, "classification")
    mobilenet = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    return {"digits_cnn": (digits, (16, 16, 1)), "mobilenet_v2_035_96": (mobilenet, (96, 96, 3))}


def _median_ms(flatbuffer: bytes, threads: int, xnnpack: bool) -> float:
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=flatbuffer, num_threads=threads, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    tensor = np.zeros(detail["shape"], detail["dtype"])
    interpreter.set_tensor(detail["index"], tensor)
    for _ in range(WARMUP):
        interpreter.invoke()
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        interpreter.invoke()
        timings.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(timings))


def run() -> dict:
    figures = {}
    rng = np.random.default_rng(0)
    for name, (model, shape) in _models().items():
        representative = rng.uniform(0, 255, (16, *shape)).astype(np.float32)
        for variant in ("float32", "int8"):
            flatbuffer = tflite.convert(model, variant, representative)
            for threads in THREADS:
                for xnnpack in (True, False):
                    key = f"{name}_{variant}_t{threads}_{'xnnpack' if xnnpack else 'builtin'}_ms"
                    figures[key] = _median_ms(flatbuffer, threads, xnnpack)
        for threads in THREADS:
            figures[f"{name}_int8_over_float32_t{threads}_xnnpack"] = \
                figures[f"{name}_int8_t{threads}_xnnpack_ms"] / figures[f"{name}_float32_t{threads}_xnnpack_ms"]
    return figures
