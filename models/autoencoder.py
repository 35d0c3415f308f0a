"""A convolutional encoder, and the denoising autoencoder that pretrains it on unlabeled images."""

from __future__ import annotations

import tf_keras as keras


def build_encoder(filters: tuple[int, ...], input_shape: tuple[int, int, int], name: str = "encoder") -> keras.Model:
    """Images in [0, 255] -> a flat feature vector; scaling to [0, 1] is inside, so the backbone carries it.

    Each block is Conv-BatchNorm-ReLU then 2x2 max pooling; the last map is flattened (not averaged) so a
    linear head still sees where strokes are.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    for index, width in enumerate(filters):
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                                name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{index}")(x)
    return keras.Model(inputs, keras.layers.Flatten(name="features")(x), name=name)


def _decoder(code, filters: tuple[int, ...], input_shape: tuple[int, int, int]):
    """Flat code -> image in [0, 1]: reshape to the encoder's last map, then one 2x transposed convolution per
    encoder block (in reverse) and a sigmoid reconstruction."""
    height, width, channels = input_shape
    scale = 2 ** len(filters)
    x = keras.layers.Reshape((height // scale, width // scale, filters[-1]), name="unflatten")(code)
    for index, width_out in enumerate(reversed(filters)):
        x = keras.layers.Conv2DTranspose(width_out, 3, strides=2, padding="same", activation="relu",
                                         name=f"up{index}")(x)
    return keras.layers.Conv2D(channels, 3, padding="same", activation="sigmoid", name="reconstruction")(x)


def build_denoising_autoencoder(filters: tuple[int, ...], input_shape: tuple[int, int, int],
                                noise_std: float) -> tuple[keras.Model, keras.Model]:
    """(autoencoder, encoder): noise (active only in training) -> encoder -> decoder -> clean image in [0, 1].

    Train it with the clean image scaled to [0, 1] as the target.
    """
    encoder = build_encoder(filters, input_shape)
    inputs = keras.Input(shape=input_shape, name="image")
    code = encoder(keras.layers.GaussianNoise(noise_std, name="noise")(inputs))
    return keras.Model(inputs, _decoder(code, filters, input_shape), name="denoising_autoencoder"), encoder


def build_latent_autoencoder(filters: tuple[int, ...], input_shape: tuple[int, int, int], latent_dim: int,
                             noise_std: float) -> tuple[keras.Model, keras.Model]:
    """(autoencoder, encoder) with a `latent_dim`-wide dense bottleneck (2 for a plot of the latent space):
    noise (training only) -> conv encoder -> Dense(latent_dim) -> decoder -> image in [0, 1]."""
    height, width, _ = input_shape
    scale = 2 ** len(filters)
    inputs = keras.Input(shape=input_shape, name="image")
    noisy = keras.layers.GaussianNoise(noise_std, name="noise")(inputs)
    code = keras.layers.Dense(latent_dim, name="latent")(build_encoder(filters, input_shape)(noisy))
    expanded = keras.layers.Dense((height // scale) * (width // scale) * filters[-1], activation="relu",
                                  name="expand")(code)
    return (keras.Model(inputs, _decoder(expanded, filters, input_shape), name="latent_autoencoder"),
            keras.Model(inputs, code, name="latent_encoder"))
