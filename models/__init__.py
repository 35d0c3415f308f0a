"""Architectures only: `build_*(config, ...) -> uncompiled keras.Model`; no I/O, no training."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def architectures() -> dict:
    """Builders by name (imported on use, so importing `models` does not load TensorFlow)."""
    from models import cnn, mlp, resnet

    return {"small_cnn": cnn.build_small_cnn, "resnet": resnet.build_resnet, "mlp": mlp.build_mlp}
