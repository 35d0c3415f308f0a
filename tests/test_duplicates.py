"""Near-duplicates that neither leak nor chain: planted copies of real handwriting among many distinct images."""

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from sklearn.datasets import load_digits

from pipelines.core import workspace
from pipelines.data import duplicates, sources, splits
from pipelines.stages import clean, split
from tests.conftest import tiny_config

KINDS = ("shifted_1px", "shifted_2px", "brighter", "darker", "jpeg", "resized", "mirrored")


def _copies(image: Image.Image) -> dict[str, Image.Image]:
    """The copies people make: shifted by a pixel or two, brightened, darkened, re-encoded, resized, mirrored."""
    pixels = np.asarray(image)

    def shift(dx: int, dy: int) -> Image.Image:
        out = np.zeros_like(pixels)
        height, width = pixels.shape
        out[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
            pixels[max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
        return Image.fromarray(out)

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=50)
    side = image.size[0]
    return {"shifted_1px": shift(1, 0), "shifted_2px": shift(-2, 1),
            "brighter": ImageEnhance.Brightness(image).enhance(1.4),
            "darker": ImageEnhance.Brightness(image).enhance(0.6), "jpeg": Image.open(io.BytesIO(buffer.getvalue())),
            "resized": image.resize((side * 3 // 4, side * 3 // 4), Image.Resampling.BILINEAR),
            "mirrored": ImageOps.mirror(image)}


def _dirty(side: int, distinct: int, groups: int, seed: int = 0):
    """`distinct` different digits at `side` px, the first `groups` of them with one copy of every kind."""
    digits = load_digits()
    pixels = np.rint(digits.images * 255 / 16).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(pixels))[:distinct]
    images = [Image.fromarray(pixels[index]).resize((side, side), Image.Resampling.BICUBIC) for index in order]
    labels, origin = list(digits.target[order]), list(order)
    for position in range(groups):
        for copy in _copies(images[position]).values():
            images.append(copy)
            labels.append(digits.target[order[position]])
            origin.append(order[position])
    return images, np.array(labels), np.array(origin)


def _settings(flips: bool = True):
    return tiny_config("/tmp", "data.near_duplicate_flips=true" if flips else "data.near_duplicate_flips=false").data


def _planted(radius: int, count: int = 3000, seed: int = 0) -> tuple[np.ndarray, list, list]:
    """Random uint64 hashes with planted copies at 0 to radius + 1 bits: the flipped bits drawn at random, spread
    evenly over the four 16-bit bands, or packed into one band. Returns the hashes and the planted pairs within
    and just beyond the radius."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, count, dtype=np.uint64)
    within, beyond, copy = [], [], count // 2
    for distance in range(radius + 2):
        for placement in ("random", "spread", "one band"):
            if placement == "one band" and distance > 16:
                continue
            bits = {"random": rng.choice(64, distance, replace=False),
                    "spread": [(bit % 4) * 16 + bit // 4 for bit in range(distance)],
                    "one band": 16 * rng.integers(4) + rng.choice(16, distance, replace=False)}[placement]
            source = int(rng.integers(count // 2))
            hashes[copy] = hashes[source] ^ np.uint64(sum(1 << int(bit) for bit in bits))
            (within if distance <= radius else beyond).append((source, copy))
            copy += 1
    return hashes, within, beyond


@pytest.mark.parametrize("radius", [0, 3, 5, duplicates.RADIUS, 11, 15])
def test_hash_search_finds_exactly_the_pairs_of_an_exhaustive_search(radius):
    hashes, within, beyond = _planted(radius)
    found = duplicates.hamming_pairs(hashes, radius)
    assert np.array_equal(found, hamming_pairs_exhaustive(hashes, radius))
    pairs = {tuple(pair) for pair in found.tolist()}
    assert set(within) <= pairs and not set(beyond) & pairs


def test_streaming_groups_match_the_images_and_reopen_only_large_ones():
    images, _, _ = _dirty(128, distinct=80, groups=4)
    images[:0] = [Image.new("L", (12, 12)), None]  # too small for a view; unreadable
    reopened = []

    def reload(index: int) -> Image.Image:
        reopened.append(index)
        return images[index]

    usable = np.array([image is not None and min(image.size) >= duplicates.MIN_SIDE for image in images])
    grey = np.zeros((len(images), duplicates.SIDE, duplicates.SIDE), np.uint8)  # what a streaming pass keeps
    for index in np.flatnonzero(usable):
        grey[index] = sources.to_canonical(images[index], duplicates.SIDE, 1)[..., 0]
    hashes = [sources.pixel_hash(image) if image is not None else None for image in images]
    sides = [min(image.size) if image is not None else 0 for image in images]
    streamed = duplicates.image_groups_from(hashes, grey, usable, sides, reload, _settings())
    expected = duplicates.image_groups(images, _settings())
    assert np.array_equal(streamed["cluster"], expected["cluster"])
    assert [pair[:2] for pair in streamed["near_pairs"]] == [pair[:2] for pair in expected["near_pairs"]]
    assert reopened and all(sides[index] >= 2 * duplicates.SIDE for index in reopened)


@pytest.mark.parametrize("side", [32, pytest.param(128, marks=pytest.mark.slow)])
def test_every_kind_of_copy_is_found_and_no_cluster_joins_two_originals(side):
    images, _, origin = _dirty(side, distinct=400, groups=12)
    cluster = duplicates.image_groups(images, _settings())["cluster"]
    for member in range(400, len(images)):  # each copy sits with its original
        original = int(np.flatnonzero(origin[:400] == origin[member])[0])
        assert cluster[member] == cluster[original], (side, KINDS[(member - 400) % len(KINDS)])
    for value in np.unique(cluster):
        assert len(set(origin[cluster == value])) == 1, f"cluster {value} joins distinct originals"


def test_a_mirrored_copy_counts_only_when_the_config_says_so():
    images, _, origin = _dirty(32, distinct=200, groups=6)
    mirrored = [200 + position * len(KINDS) + KINDS.index("mirrored") for position in range(6)]
    cluster = duplicates.image_groups(images, _settings(flips=False))["cluster"]
    assert all(cluster[member] != cluster[int(np.flatnonzero(origin[:200] == origin[member])[0])]
               for member in mirrored)


@pytest.mark.slow
def test_clean_digits_give_no_cluster_larger_than_three():
    images, _, _ = _dirty(32, distinct=1797, groups=0)
    sizes = np.bincount(duplicates.image_groups(images, _settings())["cluster"])
    assert sizes.max() <= 3


@pytest.mark.parametrize("side", [32, pytest.param(128, marks=pytest.mark.slow)])
def test_planted_groups_never_cross_splits(tmp_path, side):
    images, labels, origin = _dirty(side, distinct=300, groups=10)
    folder = tmp_path / "raw"
    for index, (image, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        image.save(folder / str(label) / f"item{index:04d}_{origin[index]}.png")
    config = tiny_config(tmp_path, "data.source=image_folder", f"data.path={folder}", "data.image_size=16",
                         "data.near_duplicate_flips=true")
    result = clean.run(config)
    report = workspace.read_json(result.folder / "near_duplicates.json")
    assert result.metrics["clean/largest_cluster"] == 1 + len(KINDS)
    for members in report["clusters"]:  # every cluster holds one original and its copies only
        assert len({name.split("_")[1].split(".")[0] for name in members}) == 1, members
    manifest = workspace.read_json(split.run(config).folder / splits.MANIFEST)
    by_origin: dict[str, set] = {}
    for item in manifest["items"]:
        by_origin.setdefault(item["id"].split("_")[1].split(".")[0], set()).add(item["split"])
    assert all(len(places) == 1 for places in by_origin.values())


def hamming_pairs_exhaustive(hashes: np.ndarray, radius: int, chunk: int = 1024) -> np.ndarray:
    """The same pairs as `hamming_pairs`, by comparing every pair (chunk x N at a time): the reference."""
    found = [np.zeros((0, 2), np.int64)]
    for start in range(0, len(hashes), chunk):
        first, second = np.nonzero(np.bitwise_count(hashes[start:start + chunk, None] ^ hashes[None, :]) <= radius)
        first += start
        found.append(np.column_stack([first, second])[first < second])
    return np.concatenate(found)
