"""U-Net for per-pixel classification, and the same encoder-decoder without its skip connections.

Both take images in [0, 255] (scaling is inside, so the exported model carries it) and return per-pixel
class probabilities. Every block is residual (two Conv-BatchNorm stages plus a 1x1-projected shortcut).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


def _residual_block(x, filters: int, name: str):
    shortcut = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(x)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_unet(filters: tuple[int, ...], num_classes: int, input_shape: tuple[int, int, int],
               skips: bool = True) -> keras.Model:
    """Encoder of `len(filters)` residual blocks (2x2 max pooling between them), a mirrored decoder (2x
    transposed convolutions), and per-pixel softmax over `num_classes`.

    Args:
        skips: concatenate each encoder block's output into the decoder at the same resolution (U-Net);
            False gives the plain encoder-decoder, which must rebuild detail from the bottleneck alone.
    """
    height, width, _ = input_shape
    if height % 2 ** (len(filters) - 1) or width % 2 ** (len(filters) - 1):
        raise ValueError(f"input {height}x{width} must be divisible by {2 ** (len(filters) - 1)} "
                         f"for {len(filters)} levels")
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    saved = []
    for level, width_out in enumerate(filters[:-1]):
        x = _residual_block(x, width_out, f"down{level}")
        saved.append(x)
        x = keras.layers.MaxPooling2D(name=f"pool{level}")(x)
    x = _residual_block(x, filters[-1], "bottleneck")
    for level in reversed(range(len(filters) - 1)):
        x = keras.layers.Conv2DTranspose(filters[level], 2, strides=2, name=f"up{level}")(x)
        if skips:
            x = keras.layers.Concatenate(name=f"skip{level}")([x, saved[level]])
        x = _residual_block(x, filters[level], f"dec{level}")
    outputs = keras.layers.Conv2D(num_classes, 1, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="unet" if skips else "encoder_decoder")


def dice_loss(y_true: tf.Tensor, probabilities: tf.Tensor) -> tf.Tensor:
    """Soft multi-class Dice loss per image: 1 - mean over classes of 2|P.Y| / (|P| + |Y|)."""
    classes = tf.shape(probabilities)[-1]
    one_hot = tf.one_hot(tf.cast(tf.reshape(y_true, tf.shape(probabilities)[:-1]), tf.int32), classes)
    overlap = tf.reduce_sum(one_hot * probabilities, axis=[1, 2])
    total = tf.reduce_sum(one_hot + probabilities, axis=[1, 2])
    return 1.0 - tf.reduce_mean((2.0 * overlap + 1.0) / (total + 1.0), axis=-1)


LOSSES = {"cross_entropy": lambda: keras.losses.SparseCategoricalCrossentropy(), "dice": lambda: dice_loss}
