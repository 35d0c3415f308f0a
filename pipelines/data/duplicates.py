"""Exact and near-duplicate images: content hashes, verified near-duplicate pairs and their clusters.

Near-duplicates are found in two steps, so that a cheap descriptor never decides alone:
1. candidates: each image's nearest neighbours (`data.near_duplicate_candidates`, scikit-learn's
   NearestNeighbors) by two descriptors normalized for brightness and contrast, its 8x8 thumbnail and the
   magnitudes of its lowest spatial frequencies (which a shift leaves alone); with
   `data.near_duplicate_flips` the mirrored image is a query too;
2. verification on the images themselves, at 32x32 grey: the shift of up to two pixels that correlates them
   best, then, inside a two-pixel frame (where a shifted or wrapped copy differs), how well one image is a
   function of the other (a per-intensity mean, so brightening, darkening, contrast, clipping and JPEG noise
   are all allowed, but another drawing is not). The residual is the mean of the worst 5% of pixels over the
   image's spread; a pair is confirmed at or below `data.near_duplicate_tolerance`. A pair of images of 64 px
   or more that correlates closely but fails is verified again at up to 128 px: there a shift of a pixel or
   two is whole again, while at 32 px it is a fraction of a pixel that a detailed photograph does not survive. Copies shifted by a pixel or two, brightened, darkened, re-encoded as
   JPEG or resized measured at most 0.18 on digits at 32 and 128 px; distinct drawings of one digit at least
   0.38 (their nearest neighbours, 1,200 pairs).
Clusters are built from exact duplicates and confirmed pairs only, so two different images never chain
through a third that merely looks alike. Images smaller than 16 px on a side are compared by content hash
only: a 32x32 view of an 8x8 image holds too little to tell a copy from a look-alike.
"""

from __future__ import annotations

import collections

import numpy as np
from PIL import Image
from sklearn.neighbors import NearestNeighbors

import deploy.edge.predict as edge
from pipelines.data import sources

MIN_SIDE = 16
SIDE = 32  # verification size
LOW = 8  # thumbnail side, and lowest spatial frequencies per axis, of the candidate descriptors
SHIFT = 2  # largest shift searched, in pixels at SIDE
BINS = 32  # intensity bins of the function fit
WORST = 0.05  # share of pixels whose residual counts
RECHECK_CORRELATION = 0.9  # a failed pair of large images correlating this well is looked at again
FULL = 128  # side of that second look, at most


def exact_groups(hashes: list[str | None]) -> list[list[int]]:
    """Indices of items with the same content hash, grouped; singletons and unreadable items left out."""
    groups = collections.defaultdict(list)
    for index, digest in enumerate(hashes):
        if digest is not None:
            groups[digest].append(index)
    return [members for members in groups.values() if len(members) > 1]


def views(images: list[Image.Image | None]) -> tuple[np.ndarray, np.ndarray]:
    """(N, SIDE, SIDE) float32 grey views by the canonical conversion, and which images take part (readable
    and at least MIN_SIDE pixels on both sides)."""
    usable = np.array([image is not None and min(image.size) >= MIN_SIDE for image in images])
    grey = np.zeros((len(images), SIDE, SIDE), np.float32)
    for index in np.flatnonzero(usable):
        grey[index] = edge.canonical_image(images[index], (SIDE, SIDE), 1)[..., 0]
    return grey, usable


def _normalized(rows: np.ndarray) -> np.ndarray:
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)


def descriptors(grey: np.ndarray, mirrored: bool = False) -> list[np.ndarray]:
    """Two candidate descriptors per view, each normalized for brightness and contrast: the 8x8 thumbnail
    (close for copies that keep the layout: re-encoded, resized, brightened, shifted into empty margin) and the
    magnitudes of the lowest spatial frequencies on a log scale (a shift changes only their phases, so close
    for copies moved across the frame)."""
    views_ = grey[:, :, ::-1] if mirrored else grey
    step = SIDE // LOW
    thumbs = views_.reshape(len(grey), LOW, step, LOW, step).mean(axis=(2, 4)).reshape(len(grey), -1)
    spectrum = np.abs(np.fft.rfft2(views_ - views_.mean(axis=(1, 2), keepdims=True)))
    low = np.concatenate([spectrum[:, :LOW, :LOW], spectrum[:, -LOW + 1:, :LOW]], axis=1)
    return [_normalized(thumbs), _normalized(np.log1p(low).reshape(len(grey), -1))]


def candidates(grey: np.ndarray, usable: np.ndarray, neighbors: int, flips: bool) -> np.ndarray:
    """(P, 3) int array of candidate pairs (i, j, mirrored) with i < j: each image's nearest neighbours by
    either descriptor (and, with flips, by its mirror's)."""
    members = np.flatnonzero(usable)
    if len(members) < 2:
        return np.zeros((0, 3), int)
    count = min(neighbors + 1, len(members))
    indexes = [NearestNeighbors(n_neighbors=count).fit(table) for table in descriptors(grey[members])]
    found = set()
    for mirrored in (False, True) if flips else (False,):
        for index, queries in zip(indexes, descriptors(grey[members], mirrored)):
            for row, columns in enumerate(index.kneighbors(queries, return_distance=False)):
                for column in columns:
                    first, second = members[row], members[column]
                    if first != second:
                        found.add((min(first, second), max(first, second), int(mirrored)))
    return np.array(sorted(found), dtype=int).reshape(-1, 3)


def _correlation(first: np.ndarray, window: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Normalized cross-correlation of each pair over its valid overlap (P,)."""
    count = np.maximum(valid.sum(axis=(1, 2)), 1)
    a = (first - ((first * valid).sum(axis=(1, 2)) / count)[:, None, None]) * valid
    b = (window - ((window * valid).sum(axis=(1, 2)) / count)[:, None, None]) * valid
    return (a * b).sum(axis=(1, 2)) / np.maximum(np.sqrt((a * a).sum(axis=(1, 2)) * (b * b).sum(axis=(1, 2))), 1e-6)


def _best_shift(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For pairs of square views (P, S, S): the second view moved by the whole-pixel offset within SHIFT that
    correlates best with the first, the mask of the overlap, and that correlation."""
    side = first.shape[1]
    padded = np.pad(second, ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT)))
    inside = np.pad(np.ones_like(second), ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT)))
    best = np.full(len(first), -np.inf)
    shifted, mask = np.zeros_like(second), np.zeros_like(second)
    for dy in range(-SHIFT, SHIFT + 1):
        for dx in range(-SHIFT, SHIFT + 1):
            window = (slice(None), slice(SHIFT + dy, SHIFT + dy + side), slice(SHIFT + dx, SHIFT + dx + side))
            score = _correlation(first, padded[window], inside[window])
            better = score > best
            best[better], shifted[better], mask[better] = score[better], padded[window][better], inside[window][better]
    mask[:, :SHIFT], mask[:, -SHIFT:], mask[:, :, :SHIFT], mask[:, :, -SHIFT:] = 0, 0, 0, 0  # frame edges
    return shifted, mask, best


def _function_residual(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """How far `y` is from a function of `x` over the mask, per pair: fit y by its mean per intensity bin of
    x, then the mean absolute residual of the worst WORST share of pixels over y's spread."""
    pairs, pixels = x.shape[0], x.shape[1] * x.shape[2]
    x, y, mask = x.reshape(pairs, pixels), y.reshape(pairs, pixels), mask.reshape(pairs, pixels) > 0
    low = np.where(mask, x, np.inf).min(axis=1, keepdims=True)
    high = np.where(mask, x, -np.inf).max(axis=1, keepdims=True)
    bins = np.clip(((x - low) / np.maximum(high - low, 1e-6) * BINS).astype(int), 0, BINS - 1)
    keys = (np.arange(pairs)[:, None] * BINS + bins)[mask]
    sums = np.bincount(keys, y[mask], pairs * BINS)
    counts = np.maximum(np.bincount(keys, minlength=pairs * BINS), 1)
    fitted = (sums / counts).reshape(pairs, BINS)[np.arange(pairs)[:, None], bins]
    residual = np.where(mask, np.abs(y - fitted), -1.0)
    worst = max(1, int(WORST * mask.sum(axis=1).min()))
    top = -np.partition(-residual, worst - 1, axis=1)[:, :worst]
    count = mask.sum(axis=1)
    mean = np.where(mask, y, 0).sum(axis=1) / count
    spread = np.sqrt(np.where(mask, (y - mean[:, None]) ** 2, 0).sum(axis=1) / count)
    return top.clip(min=0).mean(axis=1) / np.maximum(spread, 1e-6)


def _verify(grey: np.ndarray, pairs: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(residual, best correlation) of each pair (i, j, mirrored) on the views `grey`; the residual is the
    smaller of the two directions (a clipped brightening is a function of the original, not the reverse)."""
    residual, correlation = np.empty(len(pairs)), np.empty(len(pairs))
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        first = grey[part[:, 0]]
        second = np.where(part[:, 2, None, None].astype(bool), grey[part[:, 1]][:, :, ::-1], grey[part[:, 1]])
        shifted, mask, best = _best_shift(first, second)
        residual[start:start + chunk] = np.minimum(_function_residual(first, shifted, mask),
                                                   _function_residual(shifted, first, mask))
        correlation[start:start + chunk] = best
    return residual, correlation


def residuals(images: list, grey: np.ndarray, pairs: np.ndarray, tolerance: float, chunk: int = 1024) -> np.ndarray:
    """The verification residual of each candidate pair: on the 32x32 views first; a pair of larger images that
    correlates closely there but fails is looked at again at up to FULL px, where a shift of a pixel or two is
    a whole-pixel shift again (at 32 px it is a fraction of a pixel, and a detailed photograph no longer
    matches itself)."""
    residual, correlation = _verify(grey, pairs, chunk)
    sides = np.array([min(image.size) if image is not None else 0 for image in images])
    again = np.flatnonzero((residual > tolerance) & (correlation >= RECHECK_CORRELATION)
                           & (np.minimum(sides[pairs[:, 0]], sides[pairs[:, 1]]) >= 2 * SIDE))
    if len(again):
        side = int(min(FULL, np.minimum(sides[pairs[again, 0]], sides[pairs[again, 1]]).min()))
        involved = np.unique(pairs[again, :2])  # full-size views of these images only
        large = np.stack([edge.canonical_image(images[index], (side, side), 1)[..., 0] for index in involved])
        compact = np.column_stack([np.searchsorted(involved, pairs[again, 0]),
                                   np.searchsorted(involved, pairs[again, 1]), pairs[again, 2]])
        residual[again] = np.minimum(residual[again],
                                     _verify(large.astype(np.float32), compact, max(1, chunk // 16))[0])
    return residual


def near_pairs(images: list[Image.Image | None], neighbors: int, tolerance: float,
               flips: bool = False) -> list[tuple[int, int, float]]:
    """(i, j, residual) with i < j for every confirmed near-duplicate pair."""
    grey, usable = views(images)
    proposed = candidates(grey, usable, neighbors, flips)
    scores = residuals(images, grey, proposed, tolerance)
    best: dict[tuple[int, int], float] = {}
    for (first, second, _), score in zip(proposed.tolist(), scores.tolist()):
        if score <= tolerance:
            best[(first, second)] = min(score, best.get((first, second), np.inf))
    return [(first, second, round(score, 4)) for (first, second), score in sorted(best.items())]


def clusters(count: int, pairs: list[tuple]) -> np.ndarray:
    """Connected components over the pairs: a cluster id per item (its smallest member's index)."""
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


def image_groups(images: list[Image.Image | None], settings) -> dict:
    """Content hashes, exact-duplicate groups, confirmed near-duplicate pairs and the cluster of every image.

    Args:
        settings: the data section (`near_duplicates`, `near_duplicate_candidates`,
            `near_duplicate_tolerance`, `near_duplicate_flips`).
    """
    hashes = [sources.pixel_hash(image) if image is not None else None for image in images]
    exact = exact_groups(hashes)
    pairs = near_pairs(images, settings.near_duplicate_candidates, settings.near_duplicate_tolerance,
                       settings.near_duplicate_flips) if settings.near_duplicates else []
    exact_pairs = [(group[0], other) for group in exact for other in group[1:]]
    return {"hashes": hashes, "exact": exact, "near_pairs": pairs,
            "cluster": clusters(len(hashes), exact_pairs + pairs)}
