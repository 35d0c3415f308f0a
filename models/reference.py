"""The MLPerf Tiny reference models, built from their published Keras definitions (mlcommons/tiny,
benchmark/training/*/): what the published on-device latencies in `../shared/anchors/mcu_latency.csv` were
measured on, so the latency model's MACs and operator mix come from the same graphs.

- `kws`: DS-CNN for keyword spotting (keyword_spotting/keras_model.py, `ds_cnn`): 49x10x1 MFCC, 12 classes.
- `vww`: MobileNetV1 0.25 for visual wake words (visual_wake_words/vww_model.py, from Silicon Labs'
  platform_ml_models): 96x96x3, 2 classes; `person_detection` is the same network on 96x96x1, as TFLite Micro's
  person-detection example runs it.
- `ic`: ResNet-8 for CIFAR-10 (image_classification/keras_model.py, `resnet_v1_eembc`): 32x32x3, 10 classes.
- `ad`: the fully connected ToyADMOS autoencoder (anomaly_detection/keras_model.py): 640 inputs,
  128-128-128-128-8-128-128-128-128-640.

Regularizers and initializers of the training scripts are left out: they change no operator, MAC or parameter.
Dropout is kept where the definition has it (it vanishes at conversion).
"""

from __future__ import annotations

import tf_keras as keras


def _conv_block(x, filters: int, kernel, strides=1, relu: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation("relu")(x) if relu else x


def _depthwise_block(x, strides=1):
    x = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation("relu")(x)


def build_ds_cnn(input_shape: tuple[int, int, int] = (49, 10, 1), num_classes: int = 12,
                 filters: int = 64) -> keras.Model:
    """DS-CNN: a 10x4 stride-2 convolution, four depthwise-separable blocks, average pooling and the head."""
    inputs = keras.Input(shape=input_shape)
    x = _conv_block(inputs, filters, (10, 4), strides=(2, 2))
    x = keras.layers.Dropout(0.2)(x)
    for _ in range(4):
        x = _depthwise_block(x)
        x = _conv_block(x, filters, 1)
    x = keras.layers.Dropout(0.4)(x)
    x = keras.layers.AveragePooling2D(pool_size=(input_shape[0] // 2, input_shape[1] // 2))(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="ds_cnn")


# (strides of the depthwise convolution, whether the pointwise one doubles the filters), blocks 2 to 14
MOBILENET_BLOCKS = ((1, True), (2, True), (1, False), (2, True), (1, False), (2, True), (1, False), (1, False),
                    (1, False), (1, False), (1, False), (2, True), (1, False))


def build_mobilenet_v1(input_shape: tuple[int, int, int] = (96, 96, 3), num_classes: int = 2,
                       alpha: float = 0.25) -> keras.Model:
    """MobileNetV1 as MLPerf Tiny defines it (32 x alpha filters first, ReLU, no ZeroPadding, average pooling
    over the last feature map, a dense softmax head)."""
    filters = int(32 * alpha)
    inputs = keras.Input(shape=input_shape)
    x = _conv_block(inputs, filters, 3, strides=2)
    for strides, doubles in MOBILENET_BLOCKS:
        x = _depthwise_block(x, strides)
        filters = 2 * filters if doubles else filters
        x = _conv_block(x, filters, 1)
    x = keras.layers.AveragePooling2D(pool_size=tuple(x.shape[1:3]))(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v1_025")


def _residual_stack(x, filters: int, strides: int):
    y = _conv_block(x, filters, 3, strides=strides)
    y = _conv_block(y, filters, 3, relu=False)
    if strides != 1:  # the identity path matches the new shape with a strided 1x1 convolution
        x = keras.layers.Conv2D(filters, 1, strides=strides, padding="same")(x)
    return keras.layers.Activation("relu")(keras.layers.add([x, y]))


def build_resnet8(input_shape: tuple[int, int, int] = (32, 32, 3), num_classes: int = 10,
                  filters: int = 16) -> keras.Model:
    """ResNet-8 (EEMBC's `resnet_v1_eembc`): a stem convolution and three residual stacks of 16, 32 and 64
    filters, average pooling and the head.

    16 filters as in the definition MLPerf Tiny's results were measured with (v0.5, `num_filters = 16`); the
    training script's later `conv_filters=26` default is an experiment of 2023, not the benchmark's model.
    """
    inputs = keras.Input(shape=input_shape)
    x = _conv_block(inputs, filters, 3)
    for stack, strides in enumerate((1, 2, 2)):
        x = _residual_stack(x, filters * 2 ** stack, strides)
    x = keras.layers.AveragePooling2D(pool_size=int(min(x.shape[1:3])))(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet8")


def build_fc_autoencoder(inputs_dim: int = 640, units: int = 128, code: int = 8) -> keras.Model:
    """The ToyADMOS dense autoencoder: four 128-unit layers, an 8-unit code, four 128-unit layers and the
    reconstruction, each hidden layer Dense-BatchNorm-ReLU."""
    inputs = keras.Input(shape=(inputs_dim,))
    x = inputs
    for width in (units,) * 4 + (code,) + (units,) * 4:
        x = keras.layers.Dense(width)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
    return keras.Model(inputs, keras.layers.Dense(inputs_dim)(x), name="fc_autoencoder")


def references() -> dict:
    """Reference models by the anchors file's `model` names: builder with its default (published) shape."""
    return {"kws": build_ds_cnn, "vww": build_mobilenet_v1, "ic": build_resnet8, "ad": build_fc_autoencoder,
            "person_detection": lambda: build_mobilenet_v1((96, 96, 1), 2)}
