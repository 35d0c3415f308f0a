"""Small layers shared by the builders."""

from __future__ import annotations

import tf_keras as keras


def normalization(mean: list[float], variance: list[float]) -> keras.layers.Layer:
    """A Keras Normalization layer with statistics fitted on the training split (one value, or one per channel
    or feature), so every exported model carries its own preprocessing."""
    if len(mean) == 1:
        return keras.layers.Normalization(axis=None, mean=mean[0], variance=variance[0], name="normalize")
    return keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name="normalize")


def head(x, num_outputs: int, task: str):
    """Softmax over classes, or one linear unit for regression."""
    if task == "regression":
        return keras.layers.Dense(1, name="prediction")(x)
    return keras.layers.Dense(num_outputs, activation="softmax", name="probabilities")(x)


def regularizer(config) -> keras.regularizers.Regularizer | None:
    """L1 and/or L2 penalties from the model config (None when both are zero)."""
    if config.l1 and config.l2:
        return keras.regularizers.l1_l2(l1=config.l1, l2=config.l2)
    if config.l1:
        return keras.regularizers.l1(config.l1)
    return keras.regularizers.l2(config.l2) if config.l2 else None
