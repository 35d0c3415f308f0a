"""Super-resolution x2 (SRGAN-style): a generator of residual blocks with sub-pixel upsampling, a
discriminator, and the feature network whose activations define the content (perceptual) loss.

Images are floats in [0, 1]. The generator predicts the residual over a bicubic upsampling of its input
(a global skip, as in VDSR), so an untrained generator already starts near the bicubic baseline.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras


@keras.saving.register_keras_serializable(package="project")
class PixelShuffle(keras.layers.Layer):
    """Sub-pixel convolution's rearrangement: (H, W, C * r^2) -> (H * r, W * r, C) with `tf.nn.depth_to_space`."""

    def __init__(self, scale: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, self.scale)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def _residual_block(x, filters: int, index: int):
    """Conv-PReLU-Conv plus the identity, without batch norm (EDSR showed BN hurts super-resolution)."""
    y = keras.layers.Conv2D(filters, 3, padding="same", name=f"block{index}_conv1")(x)
    y = keras.layers.PReLU(shared_axes=[1, 2], name=f"block{index}_prelu")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", name=f"block{index}_conv2")(y)
    return keras.layers.Add(name=f"block{index}_add")([x, y])


def build_sr_generator(filters: int, blocks: int, channels: int = 3, scale: int = 2) -> keras.Model:
    """Low-resolution image (any size) -> image `scale` times larger, in [0, 1] (not clipped).

    Args:
        filters: feature maps in every residual block.
        blocks: residual blocks between the head and the sub-pixel upsampler.
        channels: image channels in and out.
        scale: upsampling factor (depth_to_space block size).
    """
    low = keras.Input(shape=(None, None, channels), name="low_res")
    x = keras.layers.Conv2D(filters, 5, padding="same", name="head")(low)
    x = head = keras.layers.PReLU(shared_axes=[1, 2], name="head_prelu")(x)
    for index in range(blocks):
        x = _residual_block(x, filters, index)
    x = keras.layers.Conv2D(filters, 3, padding="same", name="body_out")(x)
    x = keras.layers.Add(name="body_skip")([head, x])
    x = keras.layers.Conv2D(filters * scale * scale, 3, padding="same", name="subpixel_conv")(x)
    x = PixelShuffle(scale, name="pixel_shuffle")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="upsample_prelu")(x)
    # Zero-initialized, so the untrained generator is exactly the bicubic upsampling it refines.
    residual = keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer="zeros", name="residual")(x)
    bicubic = keras.layers.UpSampling2D(scale, interpolation="bicubic", name="bicubic")(low)
    return keras.Model(low, keras.layers.Add(name="high_res")([bicubic, residual]), name="sr_generator")


def build_sr_discriminator(filters: int, channels: int = 3) -> keras.Model:
    """High-resolution patch in [0, 1] -> one logit (real > 0 > fake): strided conv blocks with batch norm and
    LeakyReLU as in SRGAN, then global average pooling so any patch size works."""
    image = keras.Input(shape=(None, None, channels), name="high_res")
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_signed")(image)
    for index, (width, stride) in enumerate([(filters, 1), (filters, 2), (2 * filters, 1), (2 * filters, 2),
                                             (4 * filters, 1), (4 * filters, 2)]):
        x = keras.layers.Conv2D(width, 3, strides=stride, padding="same", name=f"conv{index}")(x)
        if index:
            x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"lrelu{index}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(4 * filters, name="dense")(x)
    x = keras.layers.LeakyReLU(0.2, name="dense_lrelu")(x)
    return keras.Model(image, keras.layers.Dense(1, name="logit")(x), name="sr_discriminator")


def build_feature_autoencoder(filters: int, channels: int = 3) -> tuple[keras.Model, keras.Model]:
    """(autoencoder, features): the project's own content network. A convolutional autoencoder trained on the
    training photos' patches; `features` maps an image in [0, 1] to its pre-activation conv maps at half
    resolution (pre-activation, as SRGAN takes VGG's), the space where the content loss compares images."""
    image = keras.Input(shape=(None, None, channels), name="image")
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name="conv1")(image)
    x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Conv2D(2 * filters, 3, padding="same", name="conv3")(x)
    features = keras.Model(image, x, name="content_features")
    y = keras.layers.ReLU(name="relu3")(x)
    y = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu", name="up")(y)
    y = keras.layers.Conv2D(channels, 3, padding="same", name="reconstruction")(y)
    return keras.Model(image, y, name="content_autoencoder"), features


def build_vgg19_features(weights: str = "imagenet", layer: str = "block5_conv4") -> keras.Model:
    """VGG19's `layer` (SRGAN's phi_5,4) for images in [0, 1]; `weights` is 'imagenet' (downloads once) or a
    weights file. Caffe-style preprocessing happens inside, so callers pass [0, 1] images."""
    vgg = keras.applications.VGG19(include_top=False, weights=weights, input_shape=(None, None, 3))
    vgg.get_layer(layer).activation = keras.activations.linear  # pre-activation features, as in SRGAN
    image = keras.Input(shape=(None, None, 3), name="image")
    x = keras.applications.vgg19.preprocess_input(keras.layers.Rescaling(255.0, name="to_255")(image))
    return keras.Model(image, keras.Model(vgg.input, vgg.get_layer(layer).output)(x), name="vgg19_features")


class SRGAN(keras.Model):
    """The generator's two training phases as one `fit()`-able model (the keras-io custom `train_step` pattern),
    on batches of (low-res, high-res) patches. `compile(adversarial=False)`: the pixel phase, the pixel loss alone
    through `pixel_optimizer` (`pixel_loss`: `l1`, the mean absolute error EDSR trains with, or `mse`).
    `compile(adversarial=True)`: SRGAN fine-tuning, one tape for the discriminator and one for the generator,
    whose loss is the pixel loss + `content_weight` x the MSE between `features` of the output and of the target
    + `adversarial_weight` x the adversarial term. Losses are scaled for `tf.distribute` (averaged over
    the global batch); each phase reports its losses through `keras.metrics.Mean` trackers."""

    PIXEL_LOSSES = ("pixel_loss",)
    ADVERSARIAL_LOSSES = ("pixel_loss", "content_loss", "adversarial_loss", "g_loss", "d_loss")

    PIXEL_LOSS_FUNCTIONS = ("l1", "mse")

    def __init__(self, generator: keras.Model, discriminator: keras.Model, features: keras.Model,
                 global_batch_size: int, content_weight: float = 1.0, adversarial_weight: float = 1e-3,
                 pixel_loss: str = "l1", **kwargs):
        super().__init__(**kwargs)
        if pixel_loss not in self.PIXEL_LOSS_FUNCTIONS:
            raise ValueError(f"pixel_loss: one of {self.PIXEL_LOSS_FUNCTIONS}, got {pixel_loss!r}")
        self.pixel_loss = pixel_loss
        self.generator, self.discriminator, self.features = generator, discriminator, features
        self.global_batch_size = global_batch_size
        self.content_weight, self.adversarial_weight = content_weight, adversarial_weight
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True, reduction=keras.losses.Reduction.NONE)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in self.ADVERSARIAL_LOSSES}
        self.adversarial = False

    def compile(self, pixel_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer,
                d_optimizer: keras.optimizers.Optimizer, adversarial: bool = False, **kwargs):
        """Choosing the phase recompiles, so `fit()` traces the other step (as a fine-tune recompiles)."""
        super().compile(**kwargs)
        self.pixel_optimizer, self.g_optimizer, self.d_optimizer = pixel_optimizer, g_optimizer, d_optimizer
        self.adversarial = adversarial

    @property
    def metrics(self) -> list:
        names = self.ADVERSARIAL_LOSSES if self.adversarial else self.PIXEL_LOSSES
        return [self.trackers[name] for name in names]

    def _average(self, per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)

    @staticmethod
    def _mse(first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.square(first - second), axis=[1, 2, 3])

    def _pixel(self, output: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        """Per-example pixel loss, averaged over the global batch."""
        if self.pixel_loss == "l1":
            return self._average(tf.reduce_mean(tf.abs(output - target), axis=[1, 2, 3]))
        return self._average(self._mse(output, target))

    def _pixel_step(self, low: tf.Tensor, high: tf.Tensor) -> dict:
        with tf.GradientTape() as tape:
            loss = self._pixel(self.generator(low, training=True), high)
        gradients = tape.gradient(loss, self.generator.trainable_weights)
        self.pixel_optimizer.apply_gradients(zip(gradients, self.generator.trainable_weights))
        return {"pixel_loss": loss}

    def _adversarial_step(self, low: tf.Tensor, high: tf.Tensor) -> dict:
        fake = self.generator(low, training=True)
        with tf.GradientTape() as tape:
            real_logits = self.discriminator(high, training=True)
            fake_logits = self.discriminator(fake, training=True)
            d_loss = self._average(self.bce(tf.ones_like(real_logits), real_logits)
                                   + self.bce(tf.zeros_like(fake_logits), fake_logits))
        gradients = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(gradients, self.discriminator.trainable_weights))
        with tf.GradientTape() as tape:
            fake = self.generator(low, training=True)
            fake_logits = self.discriminator(fake, training=True)
            pixel = self._pixel(fake, high)
            content = self._average(self._mse(self.features(fake, training=False),
                                              self.features(high, training=False)))
            adversarial = self._average(self.bce(tf.ones_like(fake_logits), fake_logits))
            g_loss = pixel + self.content_weight * content + self.adversarial_weight * adversarial
        gradients = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(gradients, self.generator.trainable_weights))
        return {"pixel_loss": pixel, "content_loss": content, "adversarial_loss": adversarial, "g_loss": g_loss,
                "d_loss": d_loss}

    def train_step(self, data) -> dict:
        low, high = data
        losses = (self._adversarial_step if self.adversarial else self._pixel_step)(low, high)
        # Each replica's loss is its share of the global mean; the trackers average over replicas, so scale back.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        for name, value in losses.items():
            self.trackers[name].update_state(value * replicas)
        return {tracker.name: tracker.result() for tracker in self.metrics}
