"""Training throughput of the streaming input pipeline against the same split held in memory, and with the
photo augmentation of `configs/image_folder.example.yaml` against none (used by the `scale` benchmark).

Each measurement fits the default `small_cnn` for `steps` batches of 32 after a warm-up of 20 (tracing and
filling the shuffle buffer), on the training split of a split folder: streaming reads it from its shards
(`augment.dataset`, as training does), in memory it is one uint8 array (`from_tensor_slices`, shuffled over
the whole split, cast to float32 in the pipeline). Same model, same data, same batch size.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipelines.core import config as config_module

BATCH, WARMUP = 32, 20


def _rate(model, dataset, steps: int) -> float:
    model.fit(dataset, epochs=1, steps_per_epoch=WARMUP, verbose=0)
    started = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * BATCH / (time.perf_counter() - started)


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
    arrays = np.asarray(x)
    in_memory = tf.data.Dataset.from_tensor_slices((arrays, y)).shuffle(len(arrays), seed=0).repeat() \
        .batch(BATCH).map(lambda images, labels: (tf.cast(images, tf.float32), labels),
                          num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    augmented = augment.dataset(x, y, BATCH, 0, augment.build(config.augment)).repeat()
    rates = {name: _rate(fresh(), dataset, steps) for name, dataset in
             (("in_memory", in_memory), ("streaming", streaming), ("augmented", augmented))}
    return {"train_images_per_s_streaming": round(rates["streaming"], 1),
            "train_images_per_s_in_memory": round(rates["in_memory"], 1),
            "train_images_per_s_augmented": round(rates["augmented"], 1),
            "streaming_throughput_ratio": round(rates["streaming"] / rates["in_memory"], 3),
            "augmented_throughput_ratio": round(rates["augmented"] / rates["streaming"], 3)}
