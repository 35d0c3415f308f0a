"""Exact and near-duplicate images: content hashes, perceptual hashes (imagehash) and their clusters."""

from __future__ import annotations

import collections

import imagehash
import numpy as np
from PIL import Image

from pipelines.data import sources

MIN_SIDE = 32


def exact_groups(hashes: list[str | None]) -> list[list[int]]:
    """Indices of items with the same content hash, grouped; singletons and unreadable items left out."""
    groups = collections.defaultdict(list)
    for index, digest in enumerate(hashes):
        if digest is not None:
            groups[digest].append(index)
    return [members for members in groups.values() if len(members) > 1]


def perceptual_hashes(images: list[Image.Image | None]) -> np.ndarray:
    """64-bit DCT perceptual hash per image as (N, 64) bools; rows of unreadable images are all False."""
    bits = np.zeros((len(images), 64), dtype=bool)
    for index, image in enumerate(images):
        if image is not None:
            bits[index] = imagehash.phash(image.convert("L"), hash_size=8).hash.ravel()
    return bits


def near_pairs(bits: np.ndarray, readable: np.ndarray, max_distance: int, block: int = 1024) -> list[tuple]:
    """(i, j, distance) with i < j for every pair of readable images within `max_distance` bits."""
    packed = np.packbits(bits, axis=1)  # (N, 8) bytes
    popcount = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)
    pairs = []
    for start in range(0, len(bits), block):
        chunk = packed[start:start + block]
        distance = popcount[np.bitwise_xor(chunk[:, None, :], packed[None, :, :])].sum(axis=2, dtype=np.int32)
        rows, columns = np.nonzero(distance <= max_distance)
        for row, column in zip(rows + start, columns):
            if row < column and readable[row] and readable[column]:
                pairs.append((int(row), int(column), int(distance[row - start, column])))
    return pairs


def clusters(count: int, pairs: list[tuple]) -> np.ndarray:
    """Single-link clusters over the pairs: a cluster id per item (its smallest member's index)."""
    parent = np.arange(count)

    def find(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for first, second, *_ in pairs:
        a, b = find(first), find(second)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([find(item) for item in range(count)])


def image_groups(raw: sources.RawImages, max_distance: int) -> dict:
    """Content hashes, exact-duplicate groups, near-duplicate pairs and the cluster of every image."""
    hashes = [sources.pixel_hash(image) if image is not None else None for image in raw.images]
    # pHash works on a 32x32 reduction: smaller images (8x8 digits) collide between distinct items.
    readable = np.array([image is not None and min(image.size) >= MIN_SIDE for image in raw.images])
    exact = exact_groups(hashes)
    pairs = []
    if max_distance:
        pairs = near_pairs(perceptual_hashes([image if ok else None for image, ok in zip(raw.images, readable)]),
                           readable, max_distance)
    exact_pairs = [(group[0], other) for group in exact for other in group[1:]]
    return {"hashes": hashes, "exact": exact, "near_pairs": pairs,
            "cluster": clusters(len(hashes), exact_pairs + pairs)}
