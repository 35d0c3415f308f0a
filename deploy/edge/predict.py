"""Edge predictor: `python -m deploy.edge.predict <bundle> <image>...` prints label and score per image.

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
from PIL import Image


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

    def invoke(self, item: np.ndarray) -> np.ndarray:
        """One item (an image (H, W, C) in [0, 255], or a feature row) -> the model's float outputs."""
        batch = np.asarray(item, dtype=np.float32)[np.newaxis]
        scale, zero_point = self.input["quantization"]
        if self.input["dtype"] in (np.int8, np.uint8):
            info = np.iinfo(self.input["dtype"])
            batch = np.clip(np.rint(batch / scale + zero_point), info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], batch.astype(self.input["dtype"]))
        self.interpreter.invoke()
        scores = self.interpreter.get_tensor(self.output["index"])[0]
        scale, zero_point = self.output["quantization"]
        if self.output["dtype"] in (np.int8, np.uint8):
            return (scores.astype(np.float32) - zero_point) * scale
        return scores.astype(np.float32)

    def predict(self, items: np.ndarray) -> np.ndarray:
        """Outputs for a batch, one invocation per item (the model's batch size is 1)."""
        return np.stack([self.invoke(item) for item in items])


def load_image(path: str | Path, preprocessing: dict) -> np.ndarray:
    """An image file -> (size, size, channels) uint8, the way the pipeline's clean stage makes its images."""
    try:
        with Image.open(path) as image:
            image = image.convert(preprocessing["color_mode"])
            height, width = preprocessing["size"]
            if image.size != (width, height):
                image = image.resize((width, height), getattr(Image.Resampling, preprocessing["resample"].upper()))
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read image ({error})") from None
    return array[..., np.newaxis] if array.ndim == 2 else array


def predict(bundle: str | Path, paths: list[str]) -> list[tuple[str, str, float]]:
    """(path, label, score) for each image file."""
    bundle = Path(bundle)
    metadata = json.loads((bundle / "metadata.json").read_text())
    labels = (bundle / "labels.txt").read_text().splitlines()
    classifier = LiteRTModel(bundle / "model.tflite")
    results = []
    for path in paths:
        scores = classifier.invoke(load_image(path, metadata["preprocessing"]))
        best = int(np.argmax(scores))
        results.append((str(path), labels[best], float(scores[best])))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.edge.predict", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle folder with model.tflite, labels.txt, metadata.json")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, BMP, GIF)")
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
