"""DCGAN generator and discriminator for small square images in [-1, 1], optionally class-conditional
(the class label is a second input to both networks)."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from models.settings import GanSettings


def build_generator(config: GanSettings, image_shape: tuple[int, int, int], num_classes: int = 0) -> keras.Model:
    """Noise (latent_dim,) [and a class label] -> image of `image_shape` in [-1, 1], upsampled twice by strided
    transposed convolutions. Conditional: a learned embedding of the label is concatenated to the noise."""
    height, width, channels = image_shape
    filters = 2 * config.base_filters
    noise = keras.Input(shape=(config.latent_dim,), name="noise")
    inputs, code = [noise], noise
    if num_classes:
        label = keras.Input(shape=(), dtype="int32", name="label")
        embedded = keras.layers.Embedding(num_classes, config.latent_dim, name="label_embedding")(label)
        code = keras.layers.Concatenate(name="condition")([noise, embedded])
        inputs.append(label)
    x = keras.layers.Dense((height // 4) * (width // 4) * filters, use_bias=False)(code)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Reshape((height // 4, width // 4, filters))(x)
    for block_filters in (filters, filters // 2):
        x = keras.layers.Conv2DTranspose(block_filters, 4, strides=2, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    image = keras.layers.Conv2D(channels, 3, padding="same", activation="tanh", name="image")(x)
    return keras.Model(inputs if num_classes else noise, image, name="generator")


@keras.saving.register_keras_serializable(package="project")
class MinibatchStdDev(keras.layers.Layer):
    """ProGAN's minibatch standard deviation: one extra feature map holding the mean over features and positions
    of each feature's standard deviation across the batch, so the discriminator can see a batch that lacks
    variety (mode collapse) and the generator is pushed to spread out."""

    def call(self, inputs):
        spread = tf.reduce_mean(tf.sqrt(tf.math.reduce_variance(inputs, axis=0) + 1e-8))
        shape = tf.shape(inputs)
        return tf.concat([inputs, tf.fill(tf.concat([shape[:-1], [1]], axis=0), spread)], axis=-1)


def build_discriminator(config: GanSettings, image_shape: tuple[int, int, int], num_classes: int = 0) -> keras.Model:
    """Image in [-1, 1] [and a class label] -> one logit (real > 0 > fake); no sigmoid, the loss works on
    logits. Conditional: the label's learned embedding is reshaped to one extra image channel. With
    `minibatch_std`, the second block also sees the batch's spread (`MinibatchStdDev`)."""
    height, width, _ = image_shape
    image = keras.Input(shape=image_shape, name="image")
    x, inputs = image, [image]
    if num_classes:
        label = keras.Input(shape=(), dtype="int32", name="label")
        plane = keras.layers.Embedding(num_classes, height * width, name="label_embedding")(label)
        plane = keras.layers.Reshape((height, width, 1))(plane)
        x = keras.layers.Concatenate(name="condition")([image, plane])
        inputs.append(label)
    for block, block_filters in enumerate((config.base_filters, 2 * config.base_filters)):
        if block and config.minibatch_std:
            x = MinibatchStdDev(name="minibatch_std")(x)
        x = keras.layers.Conv2D(block_filters, 4, strides=2, padding="same")(x)
        x = keras.layers.LeakyReLU(0.2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.3)(x)
    logit = keras.layers.Dense(1, name="logit")(x)
    return keras.Model(inputs if num_classes else image, logit, name="discriminator")


class DCGAN(keras.Model):
    """The generator, the discriminator and a moving average of the generator, trained by `fit()` on batches of
    (images in [-1, 1], integer labels) as in the keras-io DCGAN and WGAN-GP examples: one tape per network, each
    optimizer updating only its own network, losses reported through `keras.metrics.Mean` trackers.

    Losses are scaled for `tf.distribute` (`tf.nn.compute_average_loss` over the global batch), so a step under
    a mirrored strategy averages over every replica's examples. The moving average of the generator's weights
    (as in ProGAN and StyleGAN) gives steadier samples than the last step's weights; it is what gets sampled,
    scored and exported.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int, global_batch_size: int,
                 label_smoothing: float = 0.0, instance_noise: float = 0.0, ema_decay: float = 0.999, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.average_generator = keras.models.clone_model(generator)
        self.average_generator.set_weights(generator.get_weights())
        self.latent_dim, self.global_batch_size = latent_dim, global_batch_size
        self.label_smoothing, self.instance_noise, self.ema_decay = label_smoothing, instance_noise, ema_decay
        self.conditional = len(generator.inputs) > 1
        self.loss_function = keras.losses.BinaryCrossentropy(from_logits=True, reduction=keras.losses.Reduction.NONE)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    def compile(self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    @property
    def metrics(self) -> list:
        # Listed here, fit() resets the trackers at the start of every epoch.
        return [self.d_loss_tracker, self.g_loss_tracker]

    def _average(self, per_example: tf.Tensor) -> tf.Tensor:
        return tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)

    def _with_noise(self, images: tf.Tensor) -> tf.Tensor:
        if not self.instance_noise:
            return images
        return images + tf.random.normal(tf.shape(images), stddev=self.instance_noise)

    def _inputs(self, tensor: tf.Tensor, labels: tf.Tensor):
        return [tensor, labels] if self.conditional else tensor

    def _update_average(self, strategy: tf.distribute.Strategy) -> None:
        """Cross-replica context (the step reaches it by `merge_call`): every replica's copy of the averaged
        weights moves the same way. The decay warms up as in `tf.train.ExponentialMovingAverage(num_updates=)`,
        min(decay, (1 + t) / (10 + t)), so a short run is not dominated by its untrained starting weights."""
        steps = tf.cast(self.g_optimizer.iterations, tf.float32)
        decay = tf.minimum(self.ema_decay, (1.0 + steps) / (10.0 + steps))
        for average, current in zip(self.average_generator.weights, self.generator.weights):
            average.assign(decay * average + (1.0 - decay) * current)

    def train_step(self, data) -> dict:
        real, labels = data
        batch = tf.shape(real)[0]
        noise = tf.random.normal((batch, self.latent_dim))
        with tf.GradientTape() as tape:
            fake = self.generator(self._inputs(noise, labels), training=True)
            real_logits = self.discriminator(self._inputs(self._with_noise(real), labels), training=True)
            fake_logits = self.discriminator(self._inputs(self._with_noise(fake), labels), training=True)
            real_targets = tf.fill(tf.shape(real_logits), 1.0 - self.label_smoothing)
            d_loss = self._average(self.loss_function(real_targets, real_logits)
                                   + self.loss_function(tf.zeros_like(fake_logits), fake_logits))
        gradients = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(gradients, self.discriminator.trainable_weights))
        noise = tf.random.normal((batch, self.latent_dim))
        with tf.GradientTape() as tape:
            fake = self.generator(self._inputs(noise, labels), training=True)
            fake_logits = self.discriminator(self._inputs(self._with_noise(fake), labels), training=True)
            g_loss = self._average(self.loss_function(tf.ones_like(fake_logits), fake_logits))
        gradients = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(gradients, self.generator.trainable_weights))
        tf.distribute.get_replica_context().merge_call(self._update_average)
        # Each replica's loss is its share of the global mean; the trackers average over replicas, so scale back.
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        self.d_loss_tracker.update_state(d_loss * replicas)
        self.g_loss_tracker.update_state(g_loss * replicas)
        return {tracker.name: tracker.result() for tracker in self.metrics}
