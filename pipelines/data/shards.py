"""The image input pipeline: canonical images in TFRecord shards, read by every stage through `tf.data`.

Format. Clean writes `shards/part-NNNNN.tfrecord`, each record the 8-byte little-endian key of one canonical
image (its number in write order) followed by its raw uint8 pixels (H x W x C). Raw tensors, not PNG: the
images are already decoded and resized, so reading is a copy (no decode on the training path), and every
record has the same length, so record k sits at a known offset (random access for the few items a stage
looks at). TFRecord because `tf.data` reads it natively: interleave over files, auto-sharding by file under
`tf.distribute`, any path `tf.io.gfile` opens (a local folder or a bucket), and a CRC on every record.
`shards.json` lists the files with their record count, size and SHA-256, which `open` checks before anything
reads them. Split writes which keys go where (`<split>_keys.npy`), never copies of the pixels.

Readers: `Items` is one split's images (keys into the shards); `Items.dataset` is the streaming `tf.data`
pipeline (interleave over shards, keep the split's records, bounded shuffle buffer, batch, transform in
parallel, prefetch); `Items.chunks` streams numpy chunks for statistics; indexing reads single records.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipelines.core import workspace
from pipelines.core.errors import DataError

INDEX = "shards.json"
SHARD_BYTES = 32 << 20  # about 32 MB a file: enough files to interleave and to shard across workers
SHUFFLE_BUFFER = 2048  # records held for shuffling (at 128 px RGB about 100 MB)
KEY_BYTES = 8
READ_BYTES = 8 << 20  # records decoded at a time when reading chunks: about 8 MB
FRAME_BYTES = 16  # TFRecord framing: length (8), its CRC (4), then the data, then the data's CRC (4)


class Writer:
    """Appends canonical images to shard files in `folder`; `close` writes the index. The folder is a stage's
    staging folder, so a killed run leaves no half-written shard set behind (the stage renames it at the end)."""

    def __init__(self, folder: Path, shape: tuple[int, ...], per_shard: int = 0):
        import tensorflow as tf

        self._tf, self.folder, self.shape = tf, Path(folder), tuple(int(side) for side in shape)
        self.pixels = int(np.prod(self.shape))
        self.per_shard = per_shard or max(1, SHARD_BYTES // (self.pixels + KEY_BYTES + FRAME_BYTES))
        self.count, self._writer, self._files = 0, None, []
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, image: np.ndarray) -> int:
        """Appends one image (uint8, `shape`); returns its key."""
        if image.shape != self.shape or image.dtype != np.uint8:
            raise ValueError(f"shard image {image.shape} {image.dtype}, expected {self.shape} uint8")
        if self.count % self.per_shard == 0:
            self._close_file()
            name = f"part-{len(self._files):05d}.tfrecord"
            self._files.append(name)
            self._writer = self._tf.io.TFRecordWriter(str(self.folder / name))
        self._writer.write(self.count.to_bytes(KEY_BYTES, "little") + np.ascontiguousarray(image).tobytes())
        self.count += 1
        return self.count - 1

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> dict:
        self._close_file()
        files = []
        for index, name in enumerate(self._files):
            records = min(self.per_shard, self.count - index * self.per_shard)
            files.append({"name": name, "records": records, "bytes": (self.folder / name).stat().st_size,
                          "sha256": workspace.sha256_file(self.folder / name)})
        index = {"format": "tfrecord, record = key (int64 little-endian) + raw uint8 pixels",
                 "shape": list(self.shape), "dtype": "uint8", "count": self.count, "per_shard": self.per_shard,
                 "files": files}
        workspace.write_json(self.folder / INDEX, index)
        return index


@dataclasses.dataclass(frozen=True)
class Shards:
    """An opened shard set: its folder (any path `tf.io.gfile` reads) and index."""

    folder: str
    shape: tuple[int, ...]
    count: int
    per_shard: int
    files: tuple[dict, ...]

    @property
    def pixels(self) -> int:
        return int(np.prod(self.shape))

    @property
    def record_bytes(self) -> int:
        return FRAME_BYTES + KEY_BYTES + self.pixels

    def path(self, shard: int) -> str:
        return f"{self.folder.rstrip('/')}/{self.files[shard]['name']}"

    def read(self, keys) -> np.ndarray:
        """The images of `keys`, in that order, each read at its offset with its record CRC checked (for a few
        items; stream for many)."""
        import tensorflow as tf

        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        out = np.empty((len(keys), *self.shape), np.uint8)
        order = np.argsort(keys, kind="stable")
        payload = KEY_BYTES + self.pixels
        handles, found = {}, np.empty((len(keys), payload + 4), np.uint8)
        try:
            for position in order:
                shard, record = divmod(int(keys[position]), self.per_shard)
                if shard not in handles:
                    handles[shard] = tf.io.gfile.GFile(self.path(shard), "rb")
                handles[shard].seek(record * self.record_bytes + 12)
                data = handles[shard].read(payload + 4)
                if len(data) != payload + 4:
                    raise DataError(f"{self.path(shard)}: shard ends before record {record}; rerun clean --force")
                found[position] = np.frombuffer(data, np.uint8)
        finally:
            for handle in handles.values():
                handle.close()
        stored = found[:, payload:].copy().view("<u4")[:, 0]
        bad = np.flatnonzero(masked_crc32c(found[:, :payload]) != stored)
        if len(bad):
            shard, record = divmod(int(keys[bad[0]]), self.per_shard)
            raise DataError(f"{self.path(shard)}: record {record} fails its CRC: the shard is corrupt; rerun clean "
                            "--force")
        out[:] = found[:, KEY_BYTES:payload].reshape(len(keys), *self.shape)
        return out

    def chunks(self, keys, rows: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions in `keys`, images) for every key, reading each shard that holds one once, in order."""
        import tensorflow as tf

        keys = np.asarray(keys, dtype=np.int64)
        shard_of = keys // self.per_shard
        block = max(1, min(rows, READ_BYTES // self.record_bytes))  # records decoded at a time
        for shard in np.unique(shard_of):
            positions = np.flatnonzero(shard_of == shard)
            local = keys[positions] - shard * self.per_shard
            order = np.argsort(local, kind="stable")
            positions, local = positions[order], local[order]
            path, first = self.path(int(shard)), 0
            records = tf.data.TFRecordDataset(path, buffer_size=1 << 20).batch(block)
            try:  # TensorFlow's reader checks every record's CRC
                for batch in records:
                    data = tf.io.decode_raw(batch, tf.uint8).numpy()
                    inside = slice(np.searchsorted(local, first), np.searchsorted(local, first + len(data)))
                    if inside.stop > inside.start:
                        yield positions[inside], data[local[inside] - first, KEY_BYTES:KEY_BYTES + self.pixels
                                                      ].reshape(-1, *self.shape)
                    first += len(data)
            except tf.errors.DataLossError as error:
                raise DataError(f"{path}: {error.message.splitlines()[0]}: the shard is corrupt; rerun clean "
                                "--force") from None


def _crc_table() -> np.ndarray:
    table = np.zeros(256, np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # CRC-32C (Castagnoli), reflected
        table[byte] = crc
    return table


CRC_TABLE = _crc_table()


def masked_crc32c(rows: np.ndarray) -> np.ndarray:
    """TFRecord's masked CRC-32C of each row of bytes (n, length), all rows in lockstep: what a record stores
    after its data, so a record read at its offset is checked like one the TFRecord reader reads."""
    crc = np.full(len(rows), 0xFFFFFFFF, np.uint32)
    for column in np.ascontiguousarray(np.asarray(rows, np.uint8).T):
        crc = CRC_TABLE[(crc ^ column) & 0xFF] ^ (crc >> np.uint32(8))
    crc ^= np.uint32(0xFFFFFFFF)
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)


def find_corrupt(folder: str | Path) -> str | None:
    """The first shard file under `folder` with a record that fails its CRC (TensorFlow's streaming reader says
    only "corrupted record at <offset>"), or None."""
    import tensorflow as tf

    index = Path(folder) / INDEX
    if not index.is_file():
        return None
    for entry in workspace.read_json(index)["files"]:
        path = str(Path(folder) / entry["name"])
        try:
            for _ in tf.data.TFRecordDataset(path, buffer_size=1 << 20).batch(4096):
                pass
        except tf.errors.DataLossError:
            return path
    return None


def open_shards(folder: str | Path, verify: bool = True) -> Shards:
    """Reads the index and, with `verify`, checks every shard's size and SHA-256.

    Raises:
        DataError: a shard missing or failing its checksum, named, with what to do.
    """
    import tensorflow as tf

    folder = str(folder)
    index_path = f"{folder.rstrip('/')}/{INDEX}"
    if not tf.io.gfile.exists(index_path):
        raise DataError(f"{index_path}: missing; rerun clean with --force")
    with tf.io.gfile.GFile(index_path) as stream:
        import json

        index = json.loads(stream.read())
    shards = Shards(folder, tuple(index["shape"]), int(index["count"]), int(index["per_shard"]),
                    tuple(index["files"]))
    for number, entry in enumerate(shards.files if verify else ()):
        path = shards.path(number)
        if not tf.io.gfile.exists(path):
            raise DataError(f"{path}: shard missing; rerun clean with --force")
        digest = hashlib.sha256()
        with tf.io.gfile.GFile(path, "rb") as stream:
            for block in iter(lambda: stream.read(16 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != entry["sha256"]:
            raise DataError(f"{path}: shard fails its SHA-256 checksum (changed or corrupted on disk); "
                            "rerun clean with --force")
    return shards


class Items:
    """One split's images: keys into a shard set, in the split's order; the shard-backed `SplitReader`
    (pipelines/data/readers.py). Streams (`dataset`, `chunks`); reads records into memory only when asked
    (`head`, `array`, `in_memory`)."""

    dtype = np.dtype(np.uint8)
    by_file = True

    def __init__(self, shards: Shards, keys: np.ndarray):
        self.shards, self.keys = shards, np.asarray(keys, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.keys), *self.shards.shape)

    def subset(self, index) -> Items:
        """The items at `index` (positions or a mask), still in their shards."""
        return Items(self.shards, self.keys[index])

    def head(self, count: int) -> np.ndarray:
        return self.shards.read(self.keys[:count])

    def array(self) -> np.ndarray:
        out = np.empty(self.shape, np.uint8)
        for positions, images in self.chunks():
            out[positions] = images
        return out

    def joined(self, other: Items) -> Items:
        if not isinstance(other, Items) or other.shards.folder != self.shards.folder:
            raise ValueError("only splits of one shard set join")
        return Items(self.shards, np.concatenate([self.keys, other.keys]))

    def in_memory(self, limit_mb: float):
        """An `ArrayReader` of the images when they take at most `limit_mb` megabytes (on small data an epoch
        is shorter than the stream's start), else itself."""
        from pipelines.data.readers import ArrayReader

        return ArrayReader(self.array()) if np.prod(self.shape) <= limit_mb * (1 << 20) else self

    def chunks(self, rows: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions, uint8 images) covering the split once, shard by shard."""
        return self.shards.chunks(self.keys, rows)

    def dataset(self, batch_size: int, labels: np.ndarray | None = None, seed: int | None = None,
                transform=None):
        """The streaming pipeline: (float32 images, labels) batches, or (float32 images, positions) without
        labels (to put predictions back in the split's order).

        Only the shards that hold an item of this split are read, `cycle_length` at a time, interleaved
        record by record; records of other splits are dropped by key before decoding. With `seed`, the
        shard order and a bounded shuffle buffer (`SHUFFLE_BUFFER` records) are reshuffled every epoch, and
        `transform(uint8 batch, seed) -> batch` (augmentation) gets a seed per batch from a seeded stream, so
        it can run on several batches at once and still give the same stream for the same seed.
        """
        import tensorflow as tf

        shards = self.shards
        lookup = np.full(shards.count, -1, np.int64)
        lookup[self.keys] = np.arange(len(self.keys))
        used = np.unique(self.keys // shards.per_shard)
        files = tf.data.Dataset.from_tensor_slices([shards.path(int(number)) for number in used])
        if seed is not None:
            files = files.shuffle(len(used), seed=seed, reshuffle_each_iteration=True)
        records = files.interleave(lambda path: tf.data.TFRecordDataset(path, buffer_size=1 << 20),
                                   cycle_length=int(min(len(used), 4)), num_parallel_calls=tf.data.AUTOTUNE,
                                   deterministic=True)
        lookup_tensor = tf.constant(lookup)
        shape, pixels = shards.shape, shards.pixels

        def members(records):  # a block of raw records -> (positions, records) of this split's items only
            keys = tf.reshape(tf.io.decode_raw(tf.strings.substr(records, 0, KEY_BYTES), tf.int64), [-1])
            positions = tf.gather(lookup_tensor, keys)
            keep = positions >= 0
            return tf.boolean_mask(positions, keep), tf.boolean_mask(records, keep)

        # Per-record work is done on blocks of 256 (one op call per block, not per record), then unbatched.
        items = records.batch(256).map(members, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
        if seed is not None:
            items = items.shuffle(min(len(self), SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
        targets = tf.constant(labels) if labels is not None else None

        def decode(index, records):  # a batch: one decode for all its images
            images = tf.io.decode_raw(tf.strings.substr(records, KEY_BYTES, pixels), tf.uint8)
            images = tf.reshape(images, (-1, *shape))
            return images, (tf.gather(targets, index) if targets is not None else index)

        batches = items.batch(batch_size).map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if transform is not None:
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

            def apply(pair, batch_seed):
                images, second = pair
                images = tf.numpy_function(transform, [images, batch_seed], tf.uint8)
                return tf.ensure_shape(images, (None, *shape)), second

            batches = tf.data.Dataset.zip((batches, seeds)).map(
                apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return batches.map(lambda images, second: (tf.cast(images, tf.float32), second),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
