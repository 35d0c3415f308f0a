"""A small convolutional classifier with the normalization inside the model."""

from __future__ import annotations

import tf_keras as keras

from models import layers
from models.settings import ModelSettings


def build_small_cnn(config: ModelSettings, input_shape: tuple[int, ...], num_outputs: int, normalizer: dict,
                    task: str = "classification") -> keras.Model:
    """Conv(-BatchNorm)-ReLU-MaxPool blocks, an optional 1x1 bottleneck, dropout, a dense layer and the head.

    With `config.downsample` 'stride', each block's convolution has stride 2 and there is no pooling: the same
    halving of the image (rounding up where pooling rounds down an odd side) at a quarter of the convolution's
    MACs, and one operator and one pooled tensor fewer per block, which is what a microcontroller's latency is
    made of for a model this small (deploy/latency.py).

    From `config.separable_from` pixels on (the smaller side), the model is edge-sized, MobileNet style: the
    blocks after the first are depthwise-separable convolutions, and global average pooling replaces the
    flatten, so the dense layer's size no longer grows with the image (small images keep the flatten, which
    suits a 16 px digit).

    Args:
        config: filters per block, batch norm, bottleneck, dense units, dropout, initializer, L1/L2 penalties.
        input_shape: (height, width, channels) of the canonical uint8 images, fed as floats in [0, 255].
        num_outputs: classes of the softmax head (1 for regression).
        normalizer: `mean` and `variance` fitted on the training split; the model normalizes its own input so
            the exported TF-Lite model needs no preprocessing beyond resizing.
    """
    regularizer = layers.regularizer(config)
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.normalization(normalizer["mean"], normalizer["variance"])(inputs)
    edge = bool(config.separable_from) and min(input_shape[:2]) >= config.separable_from
    strides = 2 if config.downsample == "stride" else 1
    for index, filters in enumerate(config.filters):
        if edge and index > 0:
            x = keras.layers.SeparableConv2D(filters, 3, strides=strides, padding="same",
                                             depthwise_initializer=config.initializer,
                                             pointwise_initializer=config.initializer,
                                             pointwise_regularizer=regularizer, use_bias=not config.batch_norm,
                                             name=f"separable{index}")(x)
        else:
            x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", kernel_initializer=config.initializer,
                                    kernel_regularizer=regularizer, use_bias=not config.batch_norm,
                                    name=f"conv{index}")(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        if strides == 1:
            x = keras.layers.MaxPooling2D(name=f"pool{index}")(x)
    if config.bottleneck:
        x = keras.layers.Conv2D(config.bottleneck, 1, activation="relu", name="bottleneck_1x1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x) if edge else keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(config.dropout_rate, name="dropout0")(x)
    x = keras.layers.Dense(config.dense_units, activation="relu", kernel_initializer=config.initializer,
                           kernel_regularizer=regularizer, name="dense")(x)
    x = keras.layers.Dropout(config.dropout_rate, name="dropout1")(x)
    return keras.Model(inputs, layers.head(x, num_outputs, task), name="small_cnn")
