"""What every stage reads of a split's inputs: one `SplitReader` interface, whatever the storage.

Two readers implement it: `shards.Items` (images: keys into clean's TFRecord shards, streamed) and
`ArrayReader` (windows, encoded table rows, or a small image split read into memory). Code that trains,
passes over or samples a split calls the interface and never asks which one it holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np

from pipelines.core import workspace


class SplitReader(Protocol):
    """One split's inputs, in the split's order."""

    shape: tuple[int, ...]  # (items, *item shape)
    dtype: np.dtype
    by_file: bool  # records live in files that a multi-worker strategy can hand out, one worker each

    def __len__(self) -> int: ...

    def dataset(self, batch_size: int, labels: np.ndarray | None = None, seed: int | None = None,
                transform=None):
        """Batches of (float32 items, labels), shuffled and reshuffled every epoch when `seed` is given;
        `transform(uint8 batch, batch seed) -> batch` (augmentation) runs on each batch, several at once."""

    def chunks(self, rows: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, items) covering the split once, `rows` at a time: what a pass over a split iterates."""

    def subset(self, index) -> SplitReader:
        """The items at `index` (positions or a mask), stored where they were."""

    def head(self, count: int) -> np.ndarray:
        """The first `count` items as an array (calibration samples, a model's example input)."""

    def array(self) -> np.ndarray:
        """Every item as one array: only for a split known to be small."""

    def joined(self, other: SplitReader) -> SplitReader:
        """This split's items, then `other`'s (of the same storage): train+val for cross-validation folds."""

    def in_memory(self, limit_mb: float) -> SplitReader:
        """Itself, or an `ArrayReader` of its items when they take at most `limit_mb` megabytes."""


class ArrayReader:
    """A split held in an array (or a memory-mapped one): tables, sensor windows, small image splits."""

    by_file = False

    def __init__(self, items: np.ndarray):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.items.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.items.dtype

    def dataset(self, batch_size: int, labels: np.ndarray | None = None, seed: int | None = None,
                transform=None):
        """Only indices pass through tf.data (8 bytes per item, shuffled over the whole split when `seed` is
        given); one `tf.numpy_function` call per batch gathers the rows, so the array can be memory-mapped and
        of any size. Without labels, a batch's second element is its positions."""
        import tensorflow as tf

        x = self.items
        y = labels if labels is not None else np.arange(len(x))
        order = tf.data.Dataset.range(len(x))
        if seed is not None:
            order = order.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

        def gather(indices: np.ndarray, batch_seed: np.ndarray):
            items = workspace.gather_rows(x, indices)
            if transform is not None:
                items = transform(items, batch_seed)
            return items, np.asarray(y[indices])

        def load(indices, batch_seed):
            items, targets = tf.numpy_function(gather, [indices, batch_seed],
                                               [tf.as_dtype(x.dtype), tf.as_dtype(y.dtype)])
            items = tf.cast(tf.ensure_shape(items, (None, *x.shape[1:])), tf.float32)
            return items, tf.ensure_shape(targets, (None, *y.shape[1:]))

        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        return tf.data.Dataset.zip((order.batch(batch_size), seeds)) \
            .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)

    def chunks(self, rows: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self.items), rows):
            yield np.arange(start, min(start + rows, len(self.items))), np.asarray(self.items[start:start + rows])

    def subset(self, index) -> ArrayReader:
        return ArrayReader(self.items[index])

    def head(self, count: int) -> np.ndarray:
        return np.asarray(self.items[:count])

    def array(self) -> np.ndarray:
        return np.asarray(self.items)

    def joined(self, other: SplitReader) -> ArrayReader:
        return ArrayReader(np.concatenate([self.array(), other.array()]))

    def in_memory(self, limit_mb: float) -> ArrayReader:
        return self


def reader(x) -> SplitReader:
    """`x` as a SplitReader: a reader as it is, an array (tests, generated data) wrapped."""
    return x if hasattr(x, "dataset") and hasattr(x, "chunks") else ArrayReader(np.asarray(x))
