"""Models of sensor windows (time, channels), with the normalization inside the model: a 1-D CNN and a
recurrent network for classification, and a 1-D convolutional autoencoder for reconstruction-error anomaly
scores. All take raw sensor values, so an exported TF-Lite model needs no preprocessing.

Full int8 quantizes the whole input tensor with one scale: channels on very different scales (milli-g next to
rad/s) lose the small one, as tables do (see docs/stages/split.md, Normalization)."""

from __future__ import annotations

import tf_keras as keras

from models import layers
from models.settings import ModelSettings

CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


# Batch normalization's moving statistics, what inference and the int8 model use, follow the batches at this rate.
# Keras' 0.99 needs hundreds of steps to forget its start: a UCR training set of 30 to 50 series is one or two
# batches per epoch, and at 0.99 the moving statistics were still far from the data's when early stopping ended
# the run (GunPoint's test accuracy 0.62 at 0.99 against 0.90 at 0.9, three seeds, the project's train defaults).
BATCH_NORM_MOMENTUM = 0.9


def kernel_sizes(config: ModelSettings) -> tuple[int, ...]:
    """The kernel size of each of `config.filters`' blocks: `config.kernel_sizes` in order, its last value
    repeated when it is shorter than the blocks, cut to the blocks when longer."""
    sizes = tuple(config.kernel_sizes) or (3,)
    return tuple(sizes[min(index, len(sizes) - 1)] for index in range(len(config.filters)))


def build_cnn1d(config: ModelSettings, input_shape: tuple[int, int], num_outputs: int, normalizer: dict,
                task: str = "classification") -> keras.Model:
    """A fully convolutional network in the spirit of Wang et al. 2017's FCN baseline for time-series
    classification: Conv1D(-BatchNorm)-ReLU blocks over the whole window ("same" padding), global average
    pooling, dropout and the softmax head, with no dense layer in between. Its size does not grow with the
    window; its arena does (one block's input and output, window x filters bytes each in int8), which
    `config.pool_size` (max pooling between blocks) divides.

    Args:
        config: filters per block (their number is the depth), kernel sizes per block, pool size, batch norm,
            dropout, initializer, L1/L2 penalties.
        input_shape: (window length, channels) of raw sensor values.
        num_outputs: classes of the softmax head (1 for regression).
        normalizer: per-channel `mean` and `variance` fitted on the training windows.
    """
    regularizer = layers.regularizer(config)
    inputs = keras.Input(shape=input_shape, name="window")
    x = layers.normalization(normalizer["mean"], normalizer["variance"])(inputs)
    for index, (filters, size) in enumerate(zip(config.filters, kernel_sizes(config))):
        if index and config.pool_size > 1:
            x = keras.layers.MaxPooling1D(config.pool_size, padding="same", name=f"pool{index}")(x)
        x = keras.layers.Conv1D(filters, size, padding="same", use_bias=not config.batch_norm,
                                kernel_initializer=config.initializer, kernel_regularizer=regularizer,
                                name=f"conv{index}")(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization(momentum=BATCH_NORM_MOMENTUM, name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    x = keras.layers.Dropout(config.dropout_rate, name="dropout")(x)
    return keras.Model(inputs, layers.head(x, num_outputs, task), name="cnn1d")


def build_recurrent(config: ModelSettings, input_shape: tuple[int, int], num_outputs: int, normalizer: dict,
                    task: str = "classification", cell: str = "lstm", units: int | None = None,
                    unroll: bool = False) -> keras.Model:
    """Normalization, one LSTM or GRU layer (its last state), dropout and the head.

    Convert `fixed_batch(model)`. Measured with TF 2.21: the LSTM becomes one UNIDIRECTIONAL_SEQUENCE_LSTM
    operator that converts to full int8 and runs on LiteRT and TFLM; the GRU becomes a WHILE loop that
    converts to float32 (and runs on TFLM), but its int8 calibration crashes the converter with a segmentation
    fault (tensorflow/tensorflow#75140). `unroll=True` avoids the loop at about 35 to 50 times the flatbuffer
    size and an arena of about 250 KB at 64 steps.

    Args:
        cell: 'lstm' or 'gru'.
        units: units of the recurrent layer (None: `config.units`).
        unroll: unroll the time loop into plain operators (no WHILE loop in TF-Lite; the graph grows with the
            window length).
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
    inputs = keras.Input(shape=input_shape, name="window")
    x = layers.normalization(normalizer["mean"], normalizer["variance"])(inputs)
    x = CELLS[cell](units or config.units, unroll=unroll, kernel_regularizer=layers.regularizer(config), name=cell)(x)
    x = keras.layers.Dropout(config.dropout_rate, name="dropout")(x)
    return keras.Model(inputs, layers.head(x, num_outputs, task), name=f"recurrent_{cell}")


def build_conv_autoencoder1d(config: ModelSettings, input_shape: tuple[int, int], num_outputs: int, normalizer: dict,
                             task: str = "anomaly", kernel_size: int = 5) -> keras.Model:
    """A 1-D convolutional autoencoder for reconstruction-error anomaly detection (`num_outputs` and `task` are
    the architecture registry's common arguments; the output is the reconstruction).

    It maps a raw window to its reconstruction in the normalized space: train it on normal windows with
    `autoencoder.get_layer("normalize")(windows)` as the target and a mean squared error loss. Encoder: one
    strided Conv1D per entry of `config.filters`, halving the time axis; decoder: as many strided
    Conv1DTranspose layers back up, then a linear Conv1D to the input's channels. The normalization is inside,
    so its TF-Lite model takes raw values. The anomaly score (a window's mean squared error between
    reconstruction and normalized input) is computed in float from the reconstruction, on the device too: an
    int8 model that outputs the score itself has its ranges calibrated on normal windows, so anomalous windows
    saturate at its top code (measured on KDD-TSAD 135: ROC-AUC 1.00 with the int8 autoencoder, 0.88 with an
    int8 scorer).

    Raises:
        ValueError: the window length is not a multiple of 2 ** len(config.filters).
    """
    length, channels = input_shape
    if length % 2 ** len(config.filters):
        raise ValueError(f"the window length {length} must be a multiple of {2 ** len(config.filters)} "
                         f"(2 to the number of encoder blocks, {len(config.filters)})")
    inputs = keras.Input(shape=input_shape, name="window")
    normalized = layers.normalization(normalizer["mean"], normalizer["variance"])(inputs)
    x = normalized
    for index, filters in enumerate(config.filters):
        x = keras.layers.Conv1D(filters, kernel_size, strides=2, padding="same", activation="relu",
                                kernel_initializer=config.initializer, name=f"encode{index}")(x)
    for index, filters in enumerate(reversed(config.filters)):
        x = keras.layers.Conv1DTranspose(filters, kernel_size, strides=2, padding="same", activation="relu",
                                         kernel_initializer=config.initializer, name=f"decode{index}")(x)
    reconstruction = keras.layers.Conv1D(channels, kernel_size, padding="same", name="reconstruction")(x)
    return keras.Model(inputs, reconstruction, name="conv_autoencoder1d")


def fixed_batch(model: keras.Model, batch_size: int = 1) -> keras.Model:
    """A copy of `model` with a fixed batch dimension and the same weights, for the TF-Lite converter.

    An LSTM or GRU with an open batch dimension does not convert (the converter stops at "'tf.TensorListReserve'
    op requires element_shape to be static"); with a fixed batch the LSTM becomes one
    UNIDIRECTIONAL_SEQUENCE_LSTM operator and the GRU a WHILE loop. The device runs a batch of one anyway.
    """
    inputs = keras.Input(model.input_shape[1:], batch_size=batch_size, name=model.input_names[0])
    clone = keras.models.clone_model(model, input_tensors=inputs)
    clone.set_weights(model.get_weights())
    return clone
