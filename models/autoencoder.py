"""A convolutional encoder, and the denoising autoencoder that pretrains it on unlabeled images."""

from __future__ import annotations

import tf_keras as keras


def build_encoder(filters: tuple[int, ...], input_shape: tuple[int, int, int], name: str = "encoder",
                  pooling: str | None = "avg") -> keras.Model:
    """Images in [0, 255] -> features; scaling to [0, 1] is inside, so the backbone carries it.

    Each block is Conv-BatchNorm-ReLU then 2x2 max pooling. `pooling`: "avg" (the backbone's features: the last
    map averaged over space, `filters[-1]` numbers whatever the image size, so a head on them stays edge-sized;
    a flattened 32x32x64 map made a 2.1-million-parameter head), "flatten" (the whole map, for a dense
    bottleneck), or None (the map itself).
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    for index, width in enumerate(filters):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                                name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{index}")(x)
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    elif pooling == "flatten":
        x = keras.layers.Flatten(name="features")(x)
    return keras.Model(inputs, x, name=name)


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
    with that map averaged over space (global average pooling).

    Train it with the clean image scaled to [0, 1] as the target.
    """
    blocks = build_encoder(filters, input_shape, name="encoder_blocks", pooling=None)
    encoder = keras.Model(blocks.input, keras.layers.GlobalAveragePooling2D(name="features")(blocks.output),
                          name="encoder")
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
