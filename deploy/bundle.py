"""The edge bundle, written in one place: for a device with LiteRT the model, its labels, its metadata and the
predictor (`deploy/edge/predict.py`); for a microcontroller (TFLite Micro) the flatbuffer as a C array with the
arena to reserve and the ops to register. The caller writes into a staging folder that replaces the old bundle
only when every file is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deploy import micro, preflight
from deploy.edge import predict as edge


def _json(path: Path, data) -> None:
    path.write_text(json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n")


def write(place: Path, flatbuffer: bytes, labels: list[str], metadata: dict, runtime: str = "litert",
          arena_bytes: int | None = None, fit: dict | None = None) -> None:
    """One bundle in `place` (created): labels.txt, metadata.json, fit.json when given, and either model.tflite
    with predict.py (LiteRT) or model_data.cc/.h with ops.txt (TFLM, `arena_bytes` from its measured run)."""
    place.mkdir(parents=True, exist_ok=True)
    (place / "labels.txt").write_text("\n".join(labels) + "\n")
    if runtime == "tflm":
        model = edge.LiteRTModel(flatbuffer)
        scale, zero_point = model.input["quantization"]
        # every subgraph's operators (a WHILE loop's body too), not only the main graph's: the resolver must
        # hold each one, or the device stops at "Didn't find op for builtin opcode"
        ops = preflight.flatbuffer_ops(flatbuffer)
        cc, header = micro.c_array(flatbuffer, arena_bytes, ops, labels, (float(scale), int(zero_point)))
        (place / "model_data.cc").write_text(cc)
        (place / "model_data.h").write_text(header)
        (place / "ops.txt").write_text("\n".join(ops) + "\n")
    else:
        (place / "model.tflite").write_bytes(flatbuffer)
        shutil.copyfile(edge.__file__, place / "predict.py")
    _json(place / "metadata.json", metadata)  # how inputs are made and read, on every target
    if fit is not None:
        _json(place / "fit.json", fit)
