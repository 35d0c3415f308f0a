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


def column_rules(values: dict[str, np.ndarray], rules: dict[str, dict], rows: int) -> tuple[np.ndarray, list[tuple]]:
    """The declared column rules (config `data.columns`), in order, on float columns of `rows` values (NaN:
    missing), changed in place: a value outside [min, max] drops its row, is clipped, or becomes missing
    (`out_of_range`); then a missing value of a column with `impute: derive` is derived from its `derive_from` column
    (`derive_offset + derive_scale * other`). Clean applies them to the whole table and the edge predictor to
    each raw row: this is the one definition.

    Returns:
        (rows to drop, events: (row, column, "out_of_range" or "derive", old value, new value) in order).
    """
    drop, events = np.zeros(rows, dtype=bool), []
    for name, rule in rules.items():
        if name not in values:
            continue
        column = values[name]
        low = -np.inf if rule.get("min") is None else rule["min"]
        high = np.inf if rule.get("max") is None else rule["max"]
        for row in np.flatnonzero((column < low) | (column > high)):
            old = float(column[row])
            if rule.get("out_of_range", "missing") == "drop":
                drop[row] = True
            elif rule["out_of_range"] == "clip":
                column[row] = float(np.clip(old, low, high))
            else:
                column[row] = np.nan
            events.append((int(row), name, "out_of_range", old, float(column[row])))
        source = values.get(rule.get("derive_from") or "")
        if rule.get("impute") == "derive" and source is not None:
            derived = rule.get("derive_offset", 0.0) + rule.get("derive_scale", 1.0) * source
            for row in np.flatnonzero(np.isnan(column) & ~np.isnan(derived) & ~drop):
                column[row] = derived[row]
                events.append((int(row), name, "derive", float("nan"), float(derived[row])))
    return drop, events


def read_cell(text: str | None, numeric: bool, missing_values: list[str]):
    """One raw CSV cell as training read it: a missing-value token (exact text) is missing; in a numeric column
    a number, with text or an infinite value read as missing (NaN); in a categorical column the text."""
    if text is None or text in missing_values:
        return np.nan if numeric else None
    if not numeric:
        return text
    try:
        value = float(text)
    except ValueError:
        return np.nan
    return value if np.isfinite(value) else np.nan


def encode_row(row: dict, preprocessing: dict) -> tuple[np.ndarray, list[str]]:
    """A raw table row (column -> text) -> (the model's feature vector, notes), as training did it: the missing
    tokens, the declared column rules (`column_rules`), then the split's fitted preprocessing (fill missing
    values, one-hot or bin, then scale); every parameter comes from metadata.json.

    Raises:
        ValueError: a column the model needs is absent, or the column rules drop the row (training would have).
    """
    columns, tokens = preprocessing["columns"], preprocessing.get("missing_values", [""])
    rules = preprocessing.get("rules", {})
    absent = [entry["column"] for entry in columns if entry["column"] not in row]
    if absent:
        raise ValueError(f"no column(s) {absent} (the model needs {[entry['column'] for entry in columns]})")
    numeric = {entry["column"] for entry in columns if "categories" not in entry}
    numeric |= {name for name in rules if name in row} | {rule.get("derive_from") for rule in rules.values()
                                                          if rule.get("derive_from") in row}
    values = {name: np.array([read_cell(row[name], True, tokens)], dtype=np.float64) for name in numeric}
    notes = [f"column '{name}': {row[name]!r} is not a number, read as missing" for name in sorted(numeric)
             if np.isnan(values[name][0]) and row[name] not in tokens and row[name] is not None
             and row[name].strip().lower() not in ("inf", "-inf", "+inf", "infinity", "-infinity")]
    drop, events = column_rules(values, rules, 1)
    for _, name, what, old, new in events:
        if what == "out_of_range":
            low, high = (rules[name].get(end) for end in ("min", "max"))
            bounds = f"[{-np.inf if low is None else low:g}, {np.inf if high is None else high:g}]"
            if drop[0]:
                raise ValueError(f"column '{name}': {old:g} is outside {bounds}; training drops such rows")
            notes.append(f"column '{name}': {old:g} outside {bounds} -> {'missing' if np.isnan(new) else f'{new:g}'}")
    features = []
    for entry in columns:
        column = entry["column"]
        if "categories" in entry:
            value = read_cell(row[column], False, tokens)
            value = str(entry["fill"]) if value is None else value
            if value not in entry["categories"]:
                notes.append(f"column '{column}': unseen category {value!r}, encoded as none of "
                             f"{entry['categories']} (as in training)")
            features.extend(1.0 if value == category else 0.0 for category in entry["categories"])
            continue
        value = values[column][0]
        if np.isnan(value):
            value = float(entry["fill"])
        if "bin_edges" in entry:
            value = float(np.searchsorted(entry["bin_edges"][1:-1], value, side="right"))
        if "scale" in entry:
            value = (value - entry["offset"]) / entry["scale"]
        features.append(value)
    return np.array(features, dtype=np.float32), notes


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
    if len(samples) < length and preprocessing.get("short_recordings") == "pad" and len(samples):
        samples = pad_recording(samples, length, preprocessing.get("pad_mode", "edge"))  # as training padded it
    if len(samples) < length:
        raise ValueError(f"{path}: {len(samples)} samples, shorter than one window ({length})")
    for start in range(0, len(samples) - length + 1, preprocessing["stride"]):
        yield f"{path}@{start}", samples[start:start + length]


def pad_recording(samples: np.ndarray, length: int, mode: str = "edge") -> np.ndarray:
    """A recording (T, C) shorter than `length` samples, extended to `length`: its last sample repeated (edge)
    or zeros appended (zeros). Clean pads short recordings with this same function (data.short_recordings)."""
    missing = length - len(samples)
    if missing <= 0:
        return samples
    if mode not in ("edge", "zeros"):
        raise ValueError(f"pad mode must be 'edge' or 'zeros', got {mode!r}")
    return np.pad(samples, ((0, missing), (0, 0)), mode="edge" if mode == "edge" else "constant")


def _items(paths: list[str], preprocessing: dict):
    """(name, model input) for each image file, each window of a recording, or each row of each CSV file for a
    table model; (name, ValueError) for one that cannot be read."""
    import csv

    for path in paths:
        try:  # a file that cannot be read fails alone; the others are still predicted
            if preprocessing["kind"] == "image":
                yield str(path), load_image(path, preprocessing)
                continue
            if preprocessing["kind"] == "signal":
                yield from _windows(path, preprocessing)
                continue
        except ValueError as error:
            yield str(path), error
            continue
        with open(path, newline="") as stream:
            reader = csv.DictReader(stream)
            known = {entry["column"] for entry in preprocessing["columns"]} | set(preprocessing.get("rules", {}))
            extra = [name for name in reader.fieldnames or [] if name not in known]
            if extra:
                print(f"note: {path}: column(s) {extra} are not model inputs; ignored", file=sys.stderr)
            for number, row in enumerate(reader, start=2):
                try:
                    item, notes = encode_row(row, preprocessing)
                except ValueError as error:  # this row fails; the others are still predicted
                    yield f"{path}:{number}", ValueError(f"{path}: row {number}: {error}")
                    continue
                for note in notes:
                    print(f"note: {path}: row {number}: {note}", file=sys.stderr)
                yield f"{path}:{number}", item


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


def predict(bundle: str | Path, paths: list[str]) -> list[tuple[str, str | None, float | str]]:
    """(item, label, score) per image file, CSV row or window; for regression the label is the predicted value,
    for anomaly detection 'anomaly' or 'normal' by the bundle's threshold, the score the window's. A sensor
    classifier adds one line per recording after all the windows: its vote (`vote`). An item that cannot be
    scored is (item, None, the reason)."""
    bundle = Path(bundle)
    metadata = json.loads((bundle / "metadata.json").read_text())
    labels = (bundle / "labels.txt").read_text().splitlines()
    model = LiteRTModel(bundle / "model.tflite")
    decision = (metadata.get("decision_threshold"), metadata.get("positive_index", 1))
    voting = metadata["preprocessing"]["kind"] == "signal" and metadata.get("task") == "classification"
    results, windows = [], {}
    for name, item in _items(paths, metadata["preprocessing"]):
        if isinstance(item, ValueError):  # a bad row or file: named, and the others still predicted
            results.append((name, None, str(item)))
            continue
        scores = model.invoke(item)
        if metadata.get("task") == "regression":
            results.append((name, f"{float(scores[0]):.4f}", float(scores[0])))
            continue
        if metadata.get("task") == "anomaly":
            score = float(anomaly_scores(scores, item, metadata["normalization"]))
            results.append((name, labels[1] if score >= metadata["threshold"] else labels[0], score))
            continue
        best = int(decide(scores, *decision))
        results.append((name, labels[best], float(scores[best])))
        if voting:
            windows.setdefault(name.rsplit("@", 1)[0], []).append(scores)
    rule = metadata["preprocessing"].get("recording_vote", "mean")
    for recording, found in windows.items():
        label, share = vote(np.stack(found), *decision, rule=rule)
        results.append((recording, labels[label], share))
    return results


def vote(window_scores: np.ndarray, threshold: float | None = None, positive: int = 1,
         rule: str = "mean") -> tuple[int, float]:
    """A recording's class from its windows' class probabilities (`data.recording_vote`): 'mean', the decision
    on their mean (a soft vote); 'majority', the class most windows decide (`decide`), a tie going to the tied
    class of the higher mean probability. Returns (the class, its mean probability over the windows): what a
    device reports for a whole recording, and what evaluate scores per recording."""
    scores = np.asarray(window_scores, np.float64)
    mean = scores.mean(axis=0)
    if rule == "mean":
        label = int(decide(mean, threshold, positive))
    elif rule == "majority":
        counts = np.bincount(decide(scores, threshold, positive), minlength=scores.shape[-1])
        tied = np.flatnonzero(counts == counts.max())
        label = int(tied[np.argmax(mean[tied])])
    else:
        raise ValueError(f"recording vote must be 'mean' or 'majority', got {rule!r}")
    return label, float(mean[label])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.edge.predict", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle folder with model.tflite, labels.txt, metadata.json")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF), or CSV files for a table model "
                        "(one item per row) or a sensor model (one recording per file, one column per channel)")
    args = parser.parse_args(argv)
    try:
        failed = 0
        for path, label, score in predict(args.bundle, args.images):
            if label is None:
                print(f"error: {score}", file=sys.stderr)
                failed += 1
            else:
                print(f"{path}\t{label}\t{score:.4f}")
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if failed:
        print(f"error: {failed} item(s) failed; the others were predicted", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
