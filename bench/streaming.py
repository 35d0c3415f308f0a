"""Training throughput of the streaming input pipeline against the same split held in memory, and with the
photo augmentation of `configs/image_folder.example.yaml` against none (used by the `scale` benchmark).

Each measurement fits the default `small_cnn` for `steps` batches of 32 after a warm-up of 20 batches, timed
in the steady state from a callback (a `fit` call's own start and end, about the same for every pipeline but
erratic here, by seconds, are left out), three rounds with the three pipelines in turn, the median of each,
on the training split of a split folder: streaming reads it from its shards (`augment.dataset`, as training
does), in memory it is one uint8 array (`from_tensor_slices`, shuffled over the whole split, cast to float32
in the pipeline). Same model, same data, same batch size.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipelines.core import config as config_module

BATCH, WARMUP, ROUNDS = 32, 20, 3


class _Clock:
    """Keras callback: seconds from the start of batch `WARMUP` to the end of the last batch."""

    def __init__(self):
        self.started = self.stopped = 0.0

    def __call__(self, keras):
        clock = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if batch == WARMUP:
                    clock.started = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                clock.stopped = time.perf_counter()

        return Callback()


def _rate(model, dataset, steps: int) -> float:
    """Images per second in the steady state: one fit of WARMUP + `steps` batches, timed from batch WARMUP on
    (tracing, the shuffle buffer's first fill and the iterator's start and end are left out)."""
    import tf_keras as keras

    clock = _Clock()
    model.fit(dataset, epochs=1, steps_per_epoch=WARMUP + steps, callbacks=[clock(keras)], verbose=0)
    return steps * BATCH / (clock.stopped - clock.started)


def figures(split_folder: Path, config_file: Path, steps: int = 200) -> dict:
    import tensorflow as tf
    import tf_keras as keras

    import models
    from pipelines.data import augment, splits

    data = splits.load_split(split_folder)
    x, y = data.x["train"], data.y["train"]
    config = config_module.load(config_file, [])

    def fresh():
        keras.utils.set_random_seed(0)
        model = models.architectures()["small_cnn"](config_module.ModelConfig(), x.shape[1:], data.num_outputs,
                                                      data.normalizer, data.task)
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        return model

    streaming = augment.dataset(x, y, BATCH, 0, None).repeat()
    arrays = x.array()
    in_memory = tf.data.Dataset.from_tensor_slices((arrays, y)).shuffle(len(arrays), seed=0).repeat() \
        .batch(BATCH).map(lambda images, labels: (tf.cast(images, tf.float32), labels),
                          num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    augmented = augment.dataset(x, y, BATCH, 0, augment.build(config.augment)).repeat()
    # Interleaved rounds, medians: on a shared 2-vCPU machine one timing drifts by a third from one minute to
    # the next, so each pipeline is timed in every round, beside the others.
    timings = {"in_memory": [], "streaming": [], "augmented": []}
    for _ in range(ROUNDS):
        for name, dataset in (("in_memory", in_memory), ("streaming", streaming), ("augmented", augmented)):
            timings[name].append(_rate(fresh(), dataset, steps))
    rates = {name: float(np.median(values)) for name, values in timings.items()}
    return {"train_images_per_s_streaming": round(rates["streaming"], 1),
            "train_images_per_s_in_memory": round(rates["in_memory"], 1),
            "train_images_per_s_augmented": round(rates["augmented"], 1),
            "streaming_throughput_ratio": round(rates["streaming"] / rates["in_memory"], 3),
            "augmented_throughput_ratio": round(rates["augmented"] / rates["streaming"], 3)}
