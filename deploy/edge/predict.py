"""Edge predictor: `python -m deploy.edge.predict <bundle> <image or csv>...` prints label and score per item.

Imports only ai_edge_litert, numpy and pillow, so it runs on a device without TensorFlow. The bundle's
metadata.json says how to turn a file into the model's input (colour mode, size, resampling); the
normalization lives inside the model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from PIL import Image, ImageOps


class LiteRTModel:
    """A TF-Lite classifier on the LiteRT interpreter; quantizes inputs and dequantizes outputs itself."""

    def __init__(self, model: str | Path | bytes, num_threads: int | None = None):
        if isinstance(model, bytes):
            self.interpreter = Interpreter(model_content=model, num_threads=num_threads)
        else:
            self.interpreter = Interpreter(model_path=str(model), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def quantize(self, item: np.ndarray) -> np.ndarray:
        """One item (an image (H, W, C) in [0, 255], or a feature row) -> the input tensor, batch of one."""
        batch = np.asarray(item, dtype=np.float32)[np.newaxis]
        scale, zero_point = self.input["quantization"]
        if self.input["dtype"] in (np.int8, np.uint8):
            info = np.iinfo(self.input["dtype"])
            batch = np.clip(np.rint(batch / scale + zero_point), info.min, info.max)
        return batch.astype(self.input["dtype"])

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """The interpreter alone: an input tensor from `quantize` -> the raw output tensor (what batch-1
        latency measures). Variable tensors (a recurrent layer's state) are reset first: every input is a
        window of its own, as in Keras."""
        self.interpreter.reset_all_variables()
        self.interpreter.set_tensor(self.input["index"], tensor)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])

    def dequantize(self, raw: np.ndarray) -> np.ndarray:
        scores = raw[0]
        scale, zero_point = self.output["quantization"]
        if self.output["dtype"] in (np.int8, np.uint8):
            return (scores.astype(np.float32) - zero_point) * scale
        return scores.astype(np.float32)

    def invoke(self, item: np.ndarray) -> np.ndarray:
        """One item -> the model's float outputs (quantization of input and output included)."""
        return self.dequantize(self.run(self.quantize(item)))

    def predict(self, items: np.ndarray) -> np.ndarray:
        """Outputs for a batch, one invocation per item (the model's batch size is 1)."""
        return np.stack([self.invoke(item) for item in items])


RESAMPLE = Image.Resampling.BICUBIC


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey (modes I;16*, I, F) -> 8-bit grey, scaled by the range of its type (65,535 for
    16 bits; an I or F image by its largest value when that exceeds 255), never clipped."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    values = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") else (1.0 if image.mode == "F" and values.max() <= 1.0 else
                                                         max(255.0, float(values.max())))
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def canonical_image(image: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """Any PIL image -> uint8 (height, width, channels), by rule: EXIF orientation applied, 16-bit scaled to
    8 bits by its range, transparency (RGBA, LA, a palette's transparent index) composited on black, CMYK and
    palettes converted, then resized.

    The pipeline's clean stage calls this same function, so the device sees what training saw.
    """
    image = eight_bit(ImageOps.exif_transpose(image))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    image = image.convert("L" if channels == 1 else "RGB")
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), RESAMPLE)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., np.newaxis] if array.ndim == 2 else array


def load_image(path: str | Path, preprocessing: dict) -> np.ndarray:
    """An image file -> the model's input, the way the pipeline's clean stage makes its images."""
    try:
        with Image.open(path) as image:
            image.load()
            channels = 1 if preprocessing["color_mode"] == "L" else 3
            return canonical_image(image, tuple(preprocessing["size"]), channels)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read image ({error})") from None


def encode_row(row: dict, columns: list[dict]) -> np.ndarray:
    """A table row (column -> text) -> the model's feature vector, as the split stage's fitted preprocessing
    does it: fill missing values, one-hot or bin, then scale; all parameters come from metadata.json."""
    features = []
    for rule in columns:
        column = rule["column"]
        if column not in row:
            raise ValueError(f"no column '{column}' (the model needs {[item['column'] for item in columns]})")
        text = (row[column] or "").strip()
        if "categories" in rule:
            value = text if text else str(rule["fill"])
            features.extend(1.0 if value == category else 0.0 for category in rule["categories"])
            continue
        try:
            value = float(text) if text else float(rule["fill"])
        except ValueError:
            raise ValueError(f"column '{column}': {text!r} is not a number") from None
        if not np.isfinite(value):
            value = float(rule["fill"])
        if "bin_edges" in rule:
            value = float(np.searchsorted(rule["bin_edges"][1:-1], value, side="right"))
        if "scale" in rule:
            value = (value - rule["offset"]) / rule["scale"]
        features.append(value)
    return np.array(features, dtype=np.float32)


def _windows(path: str, preprocessing: dict):
    """(file@start, window) for each window of a CSV recording (one column per channel, raw sensor values),
    cut as in training: `window` samples every `stride`."""
    import csv

    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        missing = [name for name in preprocessing["channels"] if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no channel column(s) {missing}")
        rows = []
        for number, row in enumerate(reader, start=2):
            try:
                rows.append([float(row[name]) for name in preprocessing["channels"]])
            except (TypeError, ValueError):
                raise ValueError(f"{path}: row {number}: a channel value is not a number") from None
    samples, length = np.array(rows, dtype=np.float32).reshape(-1, len(preprocessing["channels"])), \
        preprocessing["window"]
    if len(samples) < length:
        raise ValueError(f"{path}: {len(samples)} samples, shorter than one window ({length})")
    for start in range(0, len(samples) - length + 1, preprocessing["stride"]):
        yield f"{path}@{start}", samples[start:start + length]


def _items(paths: list[str], preprocessing: dict):
    """(name, model input) for each image file, or for each row of each CSV file for a table model."""
    import csv

    for path in paths:
        if preprocessing["kind"] == "image":
            yield str(path), load_image(path, preprocessing)
            continue
        if preprocessing["kind"] == "signal":
            yield from _windows(path, preprocessing)
            continue
        with open(path, newline="") as stream:
            for number, row in enumerate(csv.DictReader(stream), start=2):
                try:
                    yield f"{path}:{number}", encode_row(row, preprocessing["columns"])
                except ValueError as error:
                    raise ValueError(f"{path}: row {number}: {error}") from None


def normalized(windows: np.ndarray, normalization: dict) -> np.ndarray:
    """Windows (..., samples, channels) in the normalized space an autoencoder reconstructs (per-channel
    statistics fitted on the training split; metadata.json carries them)."""
    mean, variance = np.asarray(normalization["mean"]), np.asarray(normalization["variance"])
    return ((np.asarray(windows, np.float32) - mean) / np.sqrt(variance)).astype(np.float32)


def anomaly_scores(reconstructions: np.ndarray, windows: np.ndarray, normalization: dict) -> np.ndarray:
    """Each window's anomaly score: the mean squared error between the model's reconstruction and the window in
    the normalized space, in float. Training and export score windows with this same function."""
    return ((np.asarray(reconstructions, np.float32) - normalized(windows, normalization)) ** 2).mean(axis=(-2, -1))


def decide(scores: np.ndarray, threshold: float | None = None, positive: int = 1) -> np.ndarray:
    """Class decisions from class probabilities: the most probable class, or for a binary model with a decision
    threshold (chosen on validation; metadata.json's `decision_threshold`) the positive class when its
    probability reaches the threshold. Training, evaluation and this predictor all decide here."""
    scores = np.asarray(scores)
    if threshold is None or scores.shape[-1] != 2:
        return scores.argmax(axis=-1)
    return np.where(scores[..., positive] >= threshold, positive, 1 - positive)


def predict(bundle: str | Path, paths: list[str]) -> list[tuple[str, str, float]]:
    """(item, label, score) per image file, CSV row or window; for regression the label is the predicted value,
    for anomaly detection 'anomaly' or 'normal' by the bundle's threshold, the score the window's."""
    bundle = Path(bundle)
    metadata = json.loads((bundle / "metadata.json").read_text())
    labels = (bundle / "labels.txt").read_text().splitlines()
    model = LiteRTModel(bundle / "model.tflite")
    results = []
    for name, item in _items(paths, metadata["preprocessing"]):
        scores = model.invoke(item)
        if metadata.get("task") == "regression":
            results.append((name, f"{float(scores[0]):.4f}", float(scores[0])))
            continue
        if metadata.get("task") == "anomaly":
            score = float(anomaly_scores(scores, item, metadata["normalization"]))
            results.append((name, labels[1] if score >= metadata["threshold"] else labels[0], score))
            continue
        best = int(decide(scores, metadata.get("decision_threshold"), metadata.get("positive_index", 1)))
        results.append((name, labels[best], float(scores[best])))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.edge.predict", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle folder with model.tflite, labels.txt, metadata.json")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF), or CSV files for a table model "
                        "(one item per row) or a sensor model (one recording per file, one column per channel)")
    args = parser.parse_args(argv)
    try:
        for path, label, score in predict(args.bundle, args.images):
            print(f"{path}\t{label}\t{score:.4f}")
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
