"""Int8 triage with TensorFlow Lite's QuantizationDebugger: which layers lose the most to quantization, and a
selective-quantization model that keeps those layers in float (TF-Lite's "inspecting quantization errors"
recipe: per-tensor RMSE divided by the quantization scale)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import tensorflow as tf

from deploy import tflite


def _converter(model, representative: np.ndarray):
    dataset = tflite.representative_dataset(representative)
    converter = tf.lite.TFLiteConverter.from_keras_model(tflite.convertible(model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    return converter, dataset


def layer_errors(model, representative: np.ndarray) -> pd.DataFrame:
    """One row per quantized tensor: op, tensor name, scale, mean squared error and RMSE / scale, worst first."""
    converter, dataset = _converter(model, representative)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
    debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    stats = pd.read_csv(io.StringIO(buffer.getvalue()))
    stats["rmse/scale"] = np.sqrt(stats["mean_squared_error"]) / stats["scale"]
    return stats.sort_values("rmse/scale", ascending=False).reset_index(drop=True)


def selective(model, representative: np.ndarray, denylisted: list[str]) -> bytes:
    """An int8 model (float input and output) with the named tensors' ops kept in float."""
    converter, dataset = _converter(model, representative)
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylisted)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset,
                                                         debug_options=options)
    return debugger.get_nondebug_quantized_model()
