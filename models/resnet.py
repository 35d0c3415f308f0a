"""A small ResNet: residual blocks with skip connections, and a 1x1-convolution bottleneck before the head."""

from __future__ import annotations

import tf_keras as keras

from models import layers
from models.settings import ModelSettings


def residual_block(x, filters: int, stride: int, config: ModelSettings, name: str):
    """Two 3x3 convolutions with batch norm; the input is added back (through a 1x1 projection if shapes differ)."""
    regularizer = layers.regularizer(config)
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                            kernel_initializer=config.initializer, kernel_regularizer=regularizer,
                            name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=config.initializer,
                            kernel_regularizer=regularizer, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_project")(shortcut)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_project_bn")(shortcut)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def build_resnet(config: ModelSettings, input_shape: tuple[int, ...], num_outputs: int, normalizer: dict,
                 task: str = "classification") -> keras.Model:
    """Stem convolution, one residual block per entry of `filters` (stride 2 after the first), an optional
    1x1 bottleneck (`bottleneck` filters), global average pooling, dropout and the head."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.normalization(normalizer["mean"], normalizer["variance"])(inputs)
    x = keras.layers.Conv2D(config.filters[0], 3, padding="same", kernel_initializer=config.initializer,
                            name="stem")(x)
    for index, filters in enumerate(config.filters):
        x = residual_block(x, filters, 1 if index == 0 else 2, config, name=f"block{index}")
    if config.bottleneck:
        x = keras.layers.Conv2D(config.bottleneck, 1, activation="relu", name="bottleneck_1x1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(config.dropout_rate, name="dropout")(x)
    return keras.Model(inputs, layers.head(x, num_outputs, task), name="resnet")
