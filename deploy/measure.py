"""What a TF-Lite variant costs: its size, its batch-1 latency on LiteRT, and its run on TensorFlow Lite for
Microcontrollers (cost from the flatbuffer, the arena it needed, agreement with LiteRT, or the operators it
lacks). Pure functions of a flatbuffer and its inputs: the export stage decides what to measure."""

from __future__ import annotations

import gzip
import time

import numpy as np

from deploy import latency as cost_model
from deploy import micro
from deploy.edge.predict import LiteRTModel


def sizes(flatbuffer: bytes) -> dict:
    """Bytes on flash, raw and gzipped (what an over-the-air update would send)."""
    return {"size_bytes": len(flatbuffer), "gzip_bytes": len(gzip.compress(flatbuffer, mtime=0))}


def latency(model: LiteRTModel, sample: np.ndarray, runs: int) -> dict:
    """Batch-1 latency in ms after a warm-up: of the interpreter alone on a prepared input tensor (the model's
    latency), and end to end with the predictor's input quantization and output dequantization in Python."""
    tensor = model.quantize(sample)
    row = {}
    for name, call in (("latency", lambda: model.run(tensor)), ("end_to_end", lambda: model.invoke(sample))):
        for _ in range(5):
            call()
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            call()
            timings.append((time.perf_counter() - started) * 1000.0)
        row.update({f"{name}_ms_median": float(np.median(timings)),
                    f"{name}_ms_p90": float(np.percentile(timings, 90))})
    return row


def on_device(flatbuffer: bytes, items: np.ndarray) -> tuple[dict, dict]:
    """(row, cost): cost from the flatbuffer (MACs, parameters and the counts the latency model reads:
    deploy/latency.py `profile`), LiteRT's working memory, and the same items on TFLite Micro against LiteRT (the
    arena it needed and its agreement, or why it does not run there)."""
    model = LiteRTModel(flatbuffer)
    cost = micro.cost(flatbuffer)
    row = {**cost_model.profile(cost), "params": cost["params"],
           "litert_activation_bytes": micro.activation_bytes(flatbuffer)}
    tensors = np.stack([model.quantize(item)[0] for item in items])
    reference = np.stack([model.run(tensor[None])[0] for tensor in tensors])
    try:
        outputs, arena = micro.tflm_run(flatbuffer, tensors, row["litert_activation_bytes"])
    except micro.Unsupported as error:
        return {**row, "tflm_error": str(error), "tflm_missing_ops": error.ops}, cost
    if outputs.shape != reference.shape:  # the device would compute something else: it does not run there
        return {**row, "tflm_error": f"TFLite Micro's output has shape {list(outputs.shape[1:])}, LiteRT's "
                                     f"{list(reference.shape[1:])}"}, cost
    scale = model.output["quantization"][0] or 1.0
    row.update({"tflm_arena_bytes": arena, "tflm_exact_outputs": float((outputs == reference).mean()),
                "tflm_max_output_diff": float(np.abs(outputs.astype(np.float64) - reference).max() * scale)})
    if reference.ndim == 2 and reference.shape[1] > 1:
        row["tflm_top1_agreement"] = float((outputs.argmax(axis=1) == reference.argmax(axis=1)).mean())
    return row, cost
