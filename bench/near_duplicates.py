"""Benchmark `near_duplicates`: the near-duplicate candidate search over random 64-bit hashes, for the scale benchmark.

`near_duplicates_100k_s` is the time of `duplicates.hamming_pairs` over 100,000 uniformly random hashes, among
them PLANTED pairs at 0 to radius + 1 bits, at the default `data.near_duplicate_radius`
(`near_duplicates_radius`); `near_duplicates_scaling` is that time over the time at 10,000 hashes: 10 for work
that grows linearly, 100 for comparing every pair (the goal is 25 or less). Each time is the best of REPEATS
runs; every planted pair within the radius must be found.
"""

from __future__ import annotations

import time

import numpy as np

from pipelines.core import config as config_module
from pipelines.data import duplicates

PLANTED = 1_000
REPEATS = 3


def planted_hashes(count: int, radius: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` random uint64 hashes whose last PLANTED are copies of the first PLANTED with 0 to radius + 1
    random bits flipped, and the (PLANTED, 2) planted pairs within `radius` bits."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, count, dtype=np.uint64)
    distances = np.arange(PLANTED) % (radius + 2)
    flipped = rng.random((PLANTED, 64)).argsort(axis=1) < distances[:, None]  # that many random bits per row
    masks = np.packbits(flipped, axis=1, bitorder="little").view("<u8")[:, 0]
    copies = np.arange(count - PLANTED, count)
    hashes[copies] = hashes[:PLANTED] ^ masks
    return hashes, np.column_stack([np.arange(PLANTED), copies])[distances <= radius]


def seconds(count: int, radius: int) -> float:
    """Best time of REPEATS searches over `count` hashes with planted pairs, checking that each is found."""
    hashes, planted = planted_hashes(count, radius)
    best = np.inf
    for _ in range(REPEATS):
        started = time.perf_counter()
        pairs = duplicates.hamming_pairs(hashes, radius)
        best = min(best, time.perf_counter() - started)
    found = {tuple(pair) for pair in pairs.tolist()}
    missed = [pair for pair in planted.tolist() if tuple(pair) not in found]
    if missed:
        raise AssertionError(f"hamming_pairs missed {len(missed)} planted pairs, e.g. {missed[0]}")
    return best


def figures() -> dict:
    radius = config_module.DataConfig.near_duplicate_radius
    small, large = seconds(10_000, radius), seconds(100_000, radius)
    return {"near_duplicates_radius": radius, "near_duplicates_10k_s": round(small, 4),
            "near_duplicates_100k_s": round(large, 3), "near_duplicates_scaling": round(large / small, 1)}
