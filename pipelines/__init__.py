"""The pipeline: `stages/` (one module per stage) on top of the library (`core/`, `data/`, `training/`).

Importing the package picks the project's one Keras (Keras 2 through `tf_keras`, see `models/__init__.py`)
before TensorFlow loads, and makes plots files, never windows.
"""

import os

import models  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is first imported)

os.environ.setdefault("MPLBACKEND", "Agg")
