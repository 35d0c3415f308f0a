"""The pipeline's stages: analyze, clean, split, pretrain, train, tune, export, evaluate, and gan.

Keras 2 through `tf_keras` is the one Keras of this project: tensorflow-model-optimization and
tensorflow-hub support only Keras 2. `TF_USE_LEGACY_KERAS=1` is set before TensorFlow is first imported so
that `tf.keras`, hub, tfmot and MLflow's TensorFlow flavor all see that same Keras.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")  # plots are files, never windows

STAGES = ("analyze", "clean", "split", "pretrain", "train", "tune", "export", "evaluate")
