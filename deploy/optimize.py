"""Model optimization before conversion, with tensorflow-model-optimization (Keras 2 only, hence tf_keras):
magnitude pruning to a target sparsity, quantization-aware training, pruning-preserving QAT, and weight
clustering.

Only Conv2D and Dense layers are wrapped (through `clone_model`), so layers tfmot does not know, such as the
Normalization layer that carries the preprocessing, pass through unchanged. A model with a nested model or an
opaque `hub.KerasLayer` cannot be annotated for QAT: `optimizable` says why, and export falls back.
"""

from __future__ import annotations

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
    prune_preserve_quantize_registry as prune_preserve,
)
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
    default_8bit_quantize_registry as default_8bit,
)

WRAPPED = (keras.layers.Conv2D, keras.layers.Dense)


class Diverged(RuntimeError):
    """A fine-tune's loss became NaN or infinite (Keras's TerminateOnNaN stopped it)."""


def optimizable(model: keras.Model) -> str | None:
    """None when every layer is flat and known to tfmot's cloning, else the reason it is not."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) or type(layer).__name__ == "KerasLayer":
            return (f"layer '{layer.name}' ({type(layer).__name__}) is a nested model or an opaque TF-Hub layer, "
                    "which tfmot cannot annotate")
    return None


def _clone(model: keras.Model, wrap) -> keras.Model:
    """A copy with `wrap` applied to each Conv2D and Dense layer; the other layers keep their weights."""
    clone = keras.models.clone_model(model, clone_function=lambda layer: wrap(layer) if isinstance(
        layer, WRAPPED) else layer.__class__.from_config(layer.get_config()))
    for source, target in zip(model.layers, clone.layers):
        if not isinstance(source, WRAPPED) and source.weights:
            target.set_weights(source.get_weights())
    return clone


def _batches(x, y: np.ndarray | None, batch_size: int) -> int:
    """Batches per epoch: of `batch_size` for arrays; a dataset's own count (it must know its cardinality)."""
    return int(x.cardinality()) if y is None else int(np.ceil(len(x) / batch_size))


def _finetune(model: keras.Model, loss: str, x, y: np.ndarray | None, epochs: int, learning_rate: float,
              callbacks: list, batch_size: int) -> None:
    """`x`, `y` arrays, or `x` a `tf.data.Dataset` of (inputs, labels) batches and `y` None.

    Raises:
        Diverged: the loss became NaN or infinite, saying at which epoch.
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    callbacks = [*callbacks, keras.callbacks.TerminateOnNaN()]
    if y is None:
        history = model.fit(x, epochs=epochs, callbacks=callbacks, verbose=0)
    else:
        history = model.fit(x.astype(np.float32), y, batch_size=batch_size, epochs=epochs, callbacks=callbacks,
                            verbose=0)
    losses = history.history.get("loss", [])
    if not np.all(np.isfinite(losses)) or len(losses) < epochs:
        raise Diverged(f"the fine-tune's loss became non-finite in epoch {len(losses)} "
                       f"(learning rate {learning_rate:g})")


def prune(model: keras.Model, loss: str, x, y, sparsity: float, epochs: int, learning_rate: float,
          batch_size: int = 32) -> keras.Model:
    """Low-magnitude pruning with a polynomial schedule to `sparsity`, fine-tuned, then `strip_pruning`."""
    steps = max(1, epochs * _batches(x, y, batch_size))
    end = max(1, steps * 3 // 4)  # reach the target, then fine-tune a quarter of the steps at it
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end,
                                                    frequency=max(1, end // 10))
    pruned = _clone(model, lambda layer: tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule))
    _copy_wrapped(model, pruned)
    _finetune(pruned, loss, x, y, epochs, learning_rate, [tfmot.sparsity.keras.UpdatePruningStep()], batch_size)
    return tfmot.sparsity.keras.strip_pruning(pruned)


def quantization_aware(model: keras.Model, loss: str, x, y, epochs: int, learning_rate: float,
                       batch_size: int = 32) -> keras.Model:
    """Quantization-aware training of the Conv2D and Dense layers (`quantize_apply`)."""
    annotated = _clone(model, tfmot.quantization.keras.quantize_annotate_layer)
    _copy_wrapped(model, annotated)
    quantized = tfmot.quantization.keras.quantize_apply(annotated)
    _finetune(quantized, loss, x, y, epochs, learning_rate, [], batch_size)
    return quantized


class _PrunePreserveRegistry(prune_preserve.Default8bitPrunePreserveQuantizeRegistry):
    """tfmot 0.8.1's prune-preserve registry claims every layer without trainable weights (our Normalization
    layer among them) and then fails inside the default 8-bit registry; claim only what that one supports."""

    def supports(self, layer) -> bool:
        return default_8bit.Default8BitQuantizeRegistry().supports(layer) and super().supports(layer)


class PrunePreserveScheme(tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme):
    def get_quantize_registry(self):
        return _PrunePreserveRegistry()


def prune_preserving_quantization(model: keras.Model, loss: str, x, y, sparsity: float, epochs: int,
                                  learning_rate: float, batch_size: int = 32) -> keras.Model:
    """Pruning-preserving QAT (tfmot's collaborative optimization): prune to `sparsity` and strip, then
    quantization-aware training whose weight quantizer keeps the zeros at zero."""
    pruned = prune(model, loss, x, y, sparsity, epochs, learning_rate, batch_size)
    annotated = _clone(pruned, tfmot.quantization.keras.quantize_annotate_layer)
    _copy_wrapped(pruned, annotated)
    quantized = tfmot.quantization.keras.quantize_apply(annotated, PrunePreserveScheme())
    _finetune(quantized, loss, x, y, epochs, learning_rate, [], batch_size)
    return quantized


def cluster(model: keras.Model, loss: str, x, y, clusters: int, epochs: int, learning_rate: float,
            batch_size: int = 32) -> keras.Model:
    """Weight clustering (k-means++ centroids) of the Conv2D and Dense kernels, fine-tuned, then stripped."""
    init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS

    def wrap(layer):
        return tfmot.clustering.keras.cluster_weights(layer, number_of_clusters=clusters, cluster_centroids_init=init)

    clustered = _clone_with_weights(model, wrap)
    _finetune(clustered, loss, x, y, epochs, learning_rate, [], batch_size)
    return tfmot.clustering.keras.strip_clustering(clustered)


def _copy_wrapped(source: keras.Model, target: keras.Model) -> None:
    """Copies the trained kernels into freshly wrapped layers (pruning and QAT wrappers)."""
    for original, wrapped in zip(source.layers, target.layers):
        if isinstance(original, WRAPPED):
            inner = getattr(wrapped, "layer", wrapped)
            inner.set_weights(original.get_weights())


def _clone_with_weights(model: keras.Model, wrap) -> keras.Model:
    """Clustering reads the kernel when the wrapper is built, so the weights go in before wrapping."""
    def fresh_then_wrap(layer):
        fresh = layer.__class__.from_config(layer.get_config())
        fresh.build(layer.input_shape)
        fresh.set_weights(layer.get_weights())
        return wrap(fresh)

    return _clone(model, fresh_then_wrap)


def sparsity(model: keras.Model) -> float:
    """Fraction of zero weights over the Conv2D and Dense kernels. Inside a QAT wrapper the inner layer's
    `kernel` attribute is the quantized tensor of the last call, so the kernel variable is read instead."""
    kernels = []
    for layer in model.layers:
        if isinstance(getattr(layer, "layer", layer), WRAPPED):
            kernel = next(weight for weight in layer.weights if weight.name.split("/")[-1].startswith("kernel"))
            kernels.append(kernel.numpy())
    total = sum(kernel.size for kernel in kernels)
    return float(sum(int((kernel == 0).sum()) for kernel in kernels) / max(total, 1))
