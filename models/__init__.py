"""Architectures only: `build_*(settings, ...) -> uncompiled keras.Model`; no I/O, no training.

This package is also the one place that picks the project's Keras, because every package that touches Keras
imports it first (`pipelines` and `deploy` do so in their `__init__`): Keras 2 through `tf_keras`.
tensorflow-model-optimization and tensorflow-hub support only Keras 2, so `TF_USE_LEGACY_KERAS=1` must be set
before TensorFlow is first imported; then `tf.keras`, hub, tfmot and MLflow's TensorFlow flavor all see the
same Keras. TensorFlow's C++ info and warning lines are silenced (errors still print); `load_tensorflow`
imports it without its start-up chatter, for a clean terminal.
"""

import contextlib
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core), and tf.data's threads
    handing batches to Keras fragment them: resident memory then grows with the number of training steps.
    Two arenas, as `MALLOC_ARENA_MAX=2` would set (which wins when given), keep it flat (measured: 200 MB
    less at 20,000 images). A no-op off glibc."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


_limit_malloc_arenas()


def architectures() -> dict:
    """Builders by name (imported on use, so importing `models` does not load TensorFlow)."""
    from models import cnn, mlp, resnet, sequence

    return {"small_cnn": cnn.build_small_cnn, "resnet": resnet.build_resnet, "mlp": mlp.build_mlp,
            "cnn1d": sequence.build_cnn1d, "autoencoder1d": sequence.build_conv_autoencoder1d,
            "recurrent": lambda config, *args: sequence.build_recurrent(config, *args, cell=config.cell)}


@contextlib.contextmanager
def native_stderr_to(fd: int):
    """Sends what C++ code writes to file descriptor 2 to `fd` for the block (Python's own stderr is flushed
    first); restores it after, whatever happens."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(fd, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def native_stderr_silenced():
    """Sends what C++ code writes to file descriptor 2 to /dev/null for the block: TensorFlow's start-up
    chatter (the absl pre-init banner, oneDNN and CUDA-probe lines on a CPU machine) and the TF-Lite
    converter's progress lines. Python exceptions still propagate, with their messages, after the block."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        with native_stderr_to(devnull):
            yield
    finally:
        os.close(devnull)


def load_tensorflow() -> None:
    """Imports TensorFlow and probes its devices quietly (see `native_stderr_silenced`), and keeps its Python
    logger to errors (tf.function retracing notes are not for users). A no-op once TensorFlow is loaded."""
    if "tensorflow" in sys.modules:
        return
    with native_stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
    tf.get_logger().setLevel("ERROR")
