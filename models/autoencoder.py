"""A convolutional encoder, and the denoising autoencoder that pretrains it on unlabeled images."""

from __future__ import annotations

import tf_keras as keras

# A last map of at most this many positions (4x4: 16 px digits after two blocks) is flattened, so a head still
# sees where strokes are, for at most 16 x filters[-1] features; a larger one (32x32 from 128 px photos, whose
# flattening made a 2.1-million-parameter head) is averaged over space.
FLATTEN_MAX_POSITIONS = 16


def features(x, pooling: str | None = "auto"):
    """The blocks' last map -> the backbone's features: "auto" (flatten a map of up to FLATTEN_MAX_POSITIONS
    positions, else global average pooling), "avg", "flatten", or None (the map itself)."""
    if pooling == "auto":
        pooling = "flatten" if x.shape[1] * x.shape[2] <= FLATTEN_MAX_POSITIONS else "avg"
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="features")(x)
    if pooling == "flatten":
        return keras.layers.Flatten(name="features")(x)
    return x


def build_encoder(filters: tuple[int, ...], input_shape: tuple[int, int, int], name: str = "encoder",
                  pooling: str | None = "auto") -> keras.Model:
    """Images in [0, 255] -> features (see `features`); scaling to [0, 1] is inside, so the backbone carries it.

    Each block is Conv-BatchNorm-ReLU then 2x2 max pooling. With "auto" pooling the features stay edge-sized
    whatever the image size: at most 16 x filters[-1] numbers.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    for index, width in enumerate(filters):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                                name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{index}")(x)
    return keras.Model(inputs, features(x, pooling), name=name)


def _decoder(x, filters: tuple[int, ...], channels: int):
    """The encoder's last map -> image in [0, 1]: one 2x transposed convolution per encoder block (in reverse)
    and a sigmoid reconstruction."""
    for index, width_out in enumerate(reversed(filters)):
        x = keras.layers.Conv2DTranspose(width_out, 3, strides=2, padding="same", activation="relu",
                                         name=f"up{index}")(x)
    return keras.layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(x)


def build_denoising_autoencoder(filters: tuple[int, ...], input_shape: tuple[int, int, int],
                                noise_std: float) -> tuple[keras.Model, keras.Model]:
    """(autoencoder, encoder): noise (active only in training) -> convolutional blocks -> decoder -> clean image
    in [0, 1]. The decoder reads the blocks' last map; the encoder returned (the backbone) is the same blocks
    with that map pooled as `features` does ("auto": flattened when small, else averaged over space).

    Train it with the clean image scaled to [0, 1] as the target.
    """
    blocks = build_encoder(filters, input_shape, name="encoder_blocks", pooling=None)
    encoder = keras.Model(blocks.input, features(blocks.output), name="encoder")
    inputs = keras.Input(shape=input_shape, name="image")
    code = blocks(keras.layers.GaussianNoise(noise_std, name="noise")(inputs))
    return (keras.Model(inputs, _decoder(code, filters, input_shape[-1]), name="denoising_autoencoder"),
            encoder)


def build_latent_autoencoder(filters: tuple[int, ...], input_shape: tuple[int, int, int], latent_dim: int,
                             noise_std: float) -> tuple[keras.Model, keras.Model]:
    """(autoencoder, encoder) with a `latent_dim`-wide dense bottleneck (2 for a plot of the latent space):
    noise (training only) -> conv encoder -> Dense(latent_dim) -> decoder -> image in [0, 1]."""
    height, width, _ = input_shape
    scale = 2 ** len(filters)
    inputs = keras.Input(shape=input_shape, name="image")
    noisy = keras.layers.GaussianNoise(noise_std, name="noise")(inputs)
    flat = build_encoder(filters, input_shape, pooling="flatten")(noisy)
    code = keras.layers.Dense(latent_dim, name="latent")(flat)
    expanded = keras.layers.Dense((height // scale) * (width // scale) * filters[-1], activation="relu",
                                  name="expand")(code)
    grid = keras.layers.Reshape((height // scale, width // scale, filters[-1]), name="unflatten")(expanded)
    return (keras.Model(inputs, _decoder(grid, filters, input_shape[-1]), name="latent_autoencoder"),
            keras.Model(inputs, code, name="latent_encoder"))
