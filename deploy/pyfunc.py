"""The shipped TF-Lite variants as MLflow models: a pyfunc flavor that runs the flatbuffer on LiteRT, so a variant
can be loaded from the registry (`mlflow.pyfunc.load_model("models:/<experiment>-<variant>/<version>")`),
compared across versions and promoted like the Keras model. Its input is what the bundle's predictor feeds the
interpreter: the model's input array (images in [0, 255], encoded table rows, sensor windows); its output the
model's float outputs, the same as `deploy/edge/predict.py`'s `LiteRTModel.predict`."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np

import deploy
from deploy.edge.predict import LiteRTModel


class TFLiteModel(mlflow.pyfunc.PythonModel):
    """Loads `model.tflite` (and the bundle's metadata.json) from the logged artifacts; predicts on LiteRT."""

    def __getstate__(self) -> dict:
        """Nothing loaded is pickled: MLflow runs the model on the input example before it pickles the class, and
        an interpreter does not pickle; `load_context` loads again from the artifacts."""
        return {}

    def load_context(self, context) -> None:
        self.model = LiteRTModel(context.artifacts["model"])
        self.metadata = json.loads(Path(context.artifacts["metadata"]).read_text())

    def predict(self, context, model_input, params=None) -> np.ndarray:
        items = np.asarray(model_input, dtype=np.float32)
        shape = tuple(self.metadata["input"]["shape"][1:])
        return self.model.predict(items.reshape((-1, *shape)))


REQUIREMENTS = ("ai-edge-litert", "numpy", "pillow", "mlflow")


def log(name: str, flatbuffer_path: Path, metadata_path: Path, example: np.ndarray, registered_name: str) -> str:
    """Logs one variant as a pyfunc model in the active run and registers it as a version of `registered_name`;
    returns the version. The deploy package travels with it (code_paths), so loading needs no checkout."""
    import importlib.metadata

    pins = [f"{package}=={importlib.metadata.version(package)}" for package in REQUIREMENTS]
    info = mlflow.pyfunc.log_model(name=name, python_model=TFLiteModel(),
                                   artifacts={"model": str(flatbuffer_path), "metadata": str(metadata_path)},
                                   code_paths=[str(Path(deploy.__file__).parent)], input_example=example,
                                   pip_requirements=pins, registered_model_name=registered_name,
                                   await_registration_for=0)
    return str(info.registered_model_version)
