"""The image input pipeline: shards written by clean, read by key, streamed by tf.data; checksums; kills."""

import signal
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.core.errors import DataError
from pipelines.data import augment, readers, shards, splits
from pipelines.stages import clean, split
from tests.conftest import TINY, stage_command, tamper_shard, tiny_config


def _shard_set(folder, count=300, side=8, per_shard=64):
    """A shard set of `count` images whose pixels all equal their key modulo 251, in files of `per_shard`."""
    writer = shards.Writer(folder, (side, side, 3), per_shard)
    for key in range(count):
        assert writer.write(np.full((side, side, 3), key % 251, np.uint8)) == key
    return writer.close()


def test_records_are_read_by_key_and_streamed_once_each_with_their_labels(tmp_path):
    index = _shard_set(tmp_path / "shards")
    assert len(index["files"]) == 5 and sum(entry["records"] for entry in index["files"]) == 300
    opened = shards.open_shards(tmp_path / "shards")
    keys = np.array([250, 3, 64, 199, 65, 0, 120])
    assert (opened.read(keys)[:, 0, 0, 0] == keys % 251).all()  # random access, in the order asked
    items = shards.Items(opened, np.arange(10, 290, 3))  # one split: every third item
    labels = (items.keys % 251 % 7).astype(np.int64)
    epochs = []
    dataset = items.dataset(16, labels, seed=5)
    for _ in range(2):
        seen = [(int(image[0, 0, 0]), int(label)) for images, batch in dataset for image, label in zip(images, batch)]
        epochs.append(seen)
        pixels = sorted(value for value, _ in seen)
        assert pixels == sorted(items.keys % 251)  # every item of the split once, no other item
        assert all(label == value % 7 for value, label in seen)  # labels travel with their images
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    again = [int(image[0, 0, 0]) for images, _ in items.dataset(16, labels, seed=5) for image in images]
    assert again == [value for value, _ in epochs[0]]  # the same seed gives the same stream
    positions = np.concatenate([batch.numpy() for _, batch in items.dataset(32)])
    assert sorted(positions) == list(range(len(items)))  # without labels: positions, to restore the order
    assert (items.array()[:, 0, 0, 0] == items.keys % 251).all()
    assert (items.head(5)[:, 0, 0, 0] == items.keys[:5] % 251).all()
    joined = items.joined(items.subset(np.arange(3)))
    assert len(joined) == len(items) + 3 and (joined.array()[-3:, 0, 0, 0] == items.keys[:3] % 251).all()
    small, large = items.in_memory(1.0), items.in_memory(0.0)  # 94 images of 8x8x3: 18 KB
    assert isinstance(small, readers.ArrayReader) and large is items
    assert np.array_equal(small.array(), items.array()) and not small.by_file and items.by_file
    assert (items.subset(items.keys % 2 == 0).keys % 2 == 0).all()


def test_shards_are_read_from_any_path_tf_io_gfile_opens(tmp_path):
    import tensorflow as tf

    _shard_set(tmp_path / "shards", count=100)
    remote = f"ram://{tmp_path.name}/shards"  # TensorFlow's in-memory file system stands in for a bucket
    tf.io.gfile.makedirs(remote)
    for path in (tmp_path / "shards").iterdir():
        tf.io.gfile.copy(str(path), f"{remote}/{path.name}", overwrite=True)
    items = shards.Items(shards.open_shards(remote), np.arange(0, 100, 2))
    assert (items.subset([4, 1]).head(2)[:, 0, 0, 0] == [8, 2]).all()
    streamed = sorted(int(image[0, 0, 0]) for images, _ in items.dataset(8, np.zeros(50, np.int64), seed=1)
                      for image in images)
    assert streamed == list(range(0, 100, 2))


def test_parallel_augmentation_gives_the_same_stream_for_the_same_seed(tmp_path):
    _shard_set(tmp_path / "shards", count=200, side=16)
    items = shards.Items(shards.open_shards(tmp_path / "shards"), np.arange(200))
    settings = config_module.AugmentConfig(transforms=({"name": "HorizontalFlip", "p": 0.5},
                                                      {"name": "GaussNoise", "p": 1.0}))

    def stream():
        data = augment.dataset(items, np.zeros(200, np.int64), 8, 3, augment.build(settings))
        return np.concatenate([images.numpy() for images, _ in data])

    first, second = stream(), stream()
    assert first.shape == (200, 16, 16, 3) and np.array_equal(first, second)
    plain = np.concatenate([images.numpy() for images, _ in augment.dataset(items, np.zeros(200, np.int64), 8, 3,
                                                                             None)])
    assert not np.array_equal(first, plain)  # it does augment


def test_a_shard_that_fails_its_checksum_is_named(tmp_path):
    config = tiny_config(tmp_path)
    clean.run(config)
    folder = split.run(config).folder
    assert len(splits.load_split(folder).x["train"]) > 0
    tamper_shard(folder, "train", 0)
    with pytest.raises(ValueError, match=r"shards/part-00000.tfrecord: shard fails its SHA-256 checksum .* "
                                         "rerun clean with --force"):
        splits.load_split(folder)


def test_a_corrupt_record_in_a_resigned_shard_is_named_on_every_read_path(tmp_path, capsys):
    """The shard's SHA-256 made to match a corrupted record (its CRC not): read at its offset, in chunks or
    streamed, the record fails its CRC and the file is named."""
    config = tiny_config(tmp_path)
    clean.run(config)
    folder = split.run(config).folder
    tamper_shard(folder, "train", 0, resign=True, record_crc=False)
    items = splits.split_items(folder, "train")
    message = r"shards/part-00000.tfrecord: .*(CRC|corrupt).*rerun clean --force"
    with pytest.raises(DataError, match=message):
        items.head(len(items))  # records read at their offsets
    with pytest.raises(DataError, match=message):
        items.array()  # in chunks, into memory
    with pytest.raises(DataError, match=message):
        splits.load_split(folder, in_memory_mb=1000)
    from pipelines import __main__ as cli  # streamed by tf.data during training: named too, in one line

    settings = [item for setting in [*TINY, f"runtime.root={tmp_path}", "runtime.in_memory_mb=0"]
                for item in ("--set", setting)]
    capsys.readouterr()
    assert cli.main(["train", *settings]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("error", "unexpected"))]
    assert len(errors) == 1 and errors[0].endswith("shards/part-00000.tfrecord: a record fails its CRC: the shard is "
                                                   "corrupt; rerun clean --force")
    tamper_shard(folder, "train", 0, resign=True)  # a deliberate edit, CRCs and all: the manifest's hashes catch it
    assert len(splits.split_items(folder, "train").array()) == len(items)


def _photos(folder, count: int, side: int = 96):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / ("a", "b")[index % 2] / f"{index:04d}.png")


@pytest.mark.slow
def test_a_killed_clean_leaves_the_previous_shards_whole_and_no_debris_after_a_rerun(tmp_path):
    _photos(tmp_path / "photos", 16)
    settings = [f"runtime.root={tmp_path}", "data.source=image_folder", "data.path=photos", "data.image_size=64",
                "data.channels=3", "data.near_duplicates=false"]
    config = config_module.load(None, settings)
    done = clean.run(config).folder
    before = workspace.read_manifest(done)
    _photos(tmp_path / "photos", 1200)  # more files: the next clean writes a new shard set
    child = subprocess.Popen(stage_command("clean", settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(done.parent.glob(".clean.*.tmp/shards/part-*.tfrecord")):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert list(done.parent.glob(".clean.*.tmp/shards/part-*.tfrecord")), "the kill came after clean finished"
    assert workspace.read_manifest(done) == before  # the previous outputs, untouched
    assert workspace.is_fresh(done, before["fingerprint"])  # every file, shards included, matches its hash
    shards.open_shards(done / "shards")  # and their checksums
    rerun = clean.run(config)
    assert rerun.metrics["clean/items_out"] == 1200
    assert not list(done.parent.glob(".clean.*.tmp"))  # the killed run's staging folder is gone
