"""TF-Lite converters for a Keras model: float32, dynamic range, float16, and full int8 (int8 input and
output, calibrated on representative training images). Pruned, clustered and QAT models (deploy/optimize.py)
go through the int8 converter too."""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf
import tf_keras as keras

import models
from models import sequence

VARIANTS = ("float32", "dynamic_range", "float16", "int8")


FIXED_BATCH_LAYERS = (keras.layers.RNN, keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                      keras.layers.Conv3DTranspose)


def convertible(model):
    """The model the converter can take and every runtime runs alike: a batch-1 copy when it holds a recurrent
    layer (an open batch dimension stops the converter at TensorListReserve) or a transposed convolution (with
    an open batch the converter computes TRANSPOSE_CONV's output shape at run time, with SHAPE, STRIDED_SLICE
    and PACK, which TFLite Micro does not: its output came out 1x1 where LiteRT's was 64x1), else the model
    itself."""
    if any(isinstance(layer, FIXED_BATCH_LAYERS) for layer in model.submodules):
        return sequence.fixed_batch(model)
    return model


def representative_dataset(representative: np.ndarray):
    """The converter's calibration generator: one float32 training item at a time, batch of one."""
    samples = representative.astype(np.float32)

    def dataset():
        for index in range(len(samples)):
            yield [samples[index : index + 1]]

    return dataset


def convert(model, variant: str, representative: np.ndarray | None = None) -> bytes:
    """Converts a Keras model to a TF-Lite flatbuffer.

    Args:
        variant: 'float32'; 'dynamic_range' (int8 weights, float activations); 'float16' (float16 weights);
            'int8' (full integer quantization with int8 input and output).
        representative: training images (never val or test) that calibrate the int8 ranges.
    """
    if variant not in VARIANTS:
        raise ValueError(f"export variant must be one of {VARIANTS}, got {variant!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(convertible(model))
    if variant in ("dynamic_range", "float16"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant == "float16":
            converter.target_spec.supported_types = [tf.float16]
    if variant == "int8":
        if representative is None or not len(representative):
            raise ValueError("int8 export needs representative training images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings(), models.native_stderr_silenced():
        # Full int8 has no float inputs to take statistics of; the converter warns about it every time.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return converter.convert()  # a failure raises ConverterError with the converter's own messages
