"""Exact and near-duplicate images: content hashes, verified near-duplicate pairs and their clusters.

Near-duplicates are found in two steps, so that a cheap descriptor never decides alone:
1. candidates: by each of two descriptors normalized for brightness and contrast (the 8x8 thumbnail and the
   magnitudes of the lowest spatial frequencies, which a shift leaves alone), each image's nearest neighbours
   (`data.near_duplicate_candidates`) among the images whose 64-bit hash of that descriptor is within
   `data.near_duplicate_radius` bits of its own, or fewer bits where those already hold that many; with
   `data.near_duplicate_flips` the mirrored image is a query too. The hashes are searched by multi-index
   hashing (`HashIndex`), so the search grows about linearly with the number of images instead of comparing
   every pair (on the 10,000 digits of `make bench ARGS=data` it proposes 101,000 pairs where the exhaustive
   nearest neighbours proposed 89,000, and the clusters keep their recall 1.0 and precision 0.998);
2. verification on the images themselves, at 32x32 grey: the shift of up to two pixels that correlates them
   best, then, inside a two-pixel frame (where a shifted or wrapped copy differs), how well one image is a
   function of the other (a per-intensity mean, so brightening, darkening, contrast, clipping and JPEG noise
   are all allowed, but another drawing is not). The residual is the mean of the worst 5% of pixels over the
   image's spread; a pair is confirmed at or below `data.near_duplicate_tolerance`. A pair of images of 64 px
   or more that correlates closely but fails is verified again at up to 128 px: there a shift of a pixel or
   two is whole again, while at 32 px it is a fraction of a pixel that a detailed photograph does not survive.
   Copies shifted by a pixel or two, brightened, darkened, re-encoded as JPEG or resized measured at most 0.18
   on digits at 32 and 128 px; distinct drawings of one digit at least 0.38 (their nearest neighbours, 1,200
   pairs).
Clusters are built from exact duplicates and confirmed pairs only, so two different images never chain
through a third that merely looks alike. Images smaller than 16 px on a side are compared by content hash
only: a 32x32 view of an 8x8 image holds too little to tell a copy from a look-alike. Nothing here holds the
decoded images: `image_groups_from` takes what one streaming pass keeps per image (its content hash and
32x32 view) and re-opens an image only for the second look at up to 128 px.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable

import numpy as np
from PIL import Image

import deploy.edge.predict as edge
from pipelines.core import config as config_module
from pipelines.data import sources

MIN_SIDE = 16
SIDE = 32  # verification size
LOW = 8  # thumbnail side, and lowest spatial frequencies per axis, of the candidate descriptors
SHIFT = 2  # largest shift searched, in pixels at SIDE
BINS = 32  # intensity bins of the function fit
WORST = 0.05  # share of pixels whose residual counts
RECHECK_CORRELATION = 0.9  # a failed pair of large images correlating this well is looked at again
FULL = 128  # side of that second look, at most
RADIUS = config_module.DataConfig.near_duplicate_radius  # default Hamming radius of the candidate search
BANDS = 4  # a 64-bit hash is indexed as four 16-bit bands (see HashIndex)
BAND_BITS = 64 // BANDS
CHUNK = 512  # query images per step of the candidate search


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


def _band_values(hashes: np.ndarray) -> np.ndarray:
    """(BANDS, N) int64: each band of each uint64 hash, lowest bits first."""
    shifts = np.arange(BANDS, dtype=np.uint64)[:, None] * np.uint64(BAND_BITS)
    return ((hashes[None, :] >> shifts) & np.uint64((1 << BAND_BITS) - 1)).astype(np.int64)


def band_radii(radius: int) -> list[int]:
    """How far each band is searched so that no pair within `radius` bits is missed. With radius = BANDS * s + a
    (a < BANDS): the first a + 1 bands within s bits, the others within s - 1 (-1: not searched), because a
    pair beyond that in every band differs in at least (a + 1)(s + 1) + (BANDS - a - 1) s = radius + 1 bits
    (Norouzi et al., "Fast search in Hamming space with multi-index hashing", CVPR 2012)."""
    share, rest = divmod(radius, BANDS)
    return [share if band <= rest else share - 1 for band in range(BANDS)]


@functools.cache
def _flips(radius: int) -> np.ndarray:
    """Every band value with at most `radius` bits set: XORed with a key, the keys within `radius` bits."""
    return np.flatnonzero(np.bitwise_count(np.arange(1 << BAND_BITS)) <= radius)


@dataclasses.dataclass(frozen=True)
class HashIndex:
    """Multi-index hashing over 64-bit hashes: per band, the rows sorted by that band's value and where each
    value's rows begin, so a query looks up the few values near each of its bands instead of every row.

    Why four 16-bit bands: on random hashes each band value holds N / 65536 rows. At the default radius 8 a query
    looks up 188 band values (one band within 2 bits, C(16, <= 2) = 137 values; three within 1 bit, 17 each;
    see `band_radii`) and checks the whole hash of about 188 x N / 65536 rows, 29 at 10,000 hashes and 287 at
    100,000: the work grows close to linearly up to a few hundred thousand hashes (`bench/near_duplicates.py`
    measured 100,000 at 15 to 22 times the time of 10,000 on a busy 2-core machine; comparing every pair is
    100). Narrower bands hold more rows per value (N / 4096 at 12 bits); wider ones need more look-ups (232
    per band within 2 bits at 21 bits) in far larger tables.
    """

    hashes: np.ndarray  # (N,) uint64
    order: np.ndarray  # (BANDS, N) rows sorted by each band's value
    ordered: np.ndarray  # (BANDS, N) the hashes in that order
    starts: np.ndarray  # (BANDS, 2**BAND_BITS + 1) where each band value's rows begin in `order`

    @classmethod
    def build(cls, hashes: np.ndarray) -> HashIndex:
        values = _band_values(hashes)
        order = np.argsort(values, axis=1, kind="stable")
        counts = [np.bincount(band, minlength=1 << BAND_BITS) for band in values]
        starts = np.stack([np.concatenate([[0], np.cumsum(count)]) for count in counts])
        return cls(hashes, order, hashes[order], starts)

    def within(self, queries: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """(query, row) index arrays of every pair of a query hash and an indexed hash within `radius` bits,
        each pair once (from the first band that finds it)."""
        radii, found = band_radii(radius), []
        for band, (keys, band_radius) in enumerate(zip(_band_values(queries), radii)):
            if band_radius < 0:
                continue
            flips = _flips(band_radius)
            probes = (keys[:, None] ^ flips[None, :]).ravel()
            begin, counts = self.starts[band][probes], self.starts[band][probes + 1] - self.starts[band][probes]
            offsets = np.arange(counts.sum()) + np.repeat(begin - np.cumsum(counts) + counts, counts)
            per_query = counts.reshape(len(queries), len(flips)).sum(axis=1)
            difference = np.repeat(queries, per_query) ^ self.ordered[band][offsets]
            near = np.flatnonzero(np.bitwise_count(difference) <= radius)
            query = np.searchsorted(np.cumsum(per_query), near, side="right")  # whose run each offset is in
            row, difference = self.order[band][offsets[near]], difference[near]
            first, bands = np.ones(len(near), bool), _band_values(difference)
            for earlier in range(band):
                first &= np.bitwise_count(bands[earlier]) > radii[earlier]
            found.append((query[first], row[first]))
        return np.concatenate([query for query, _ in found]), np.concatenate([row for _, row in found])


def hamming_pairs(hashes: np.ndarray, radius: int, chunk: int = 4096) -> np.ndarray:
    """(P, 2) int64 array of every pair (i, j), i < j, of uint64 hashes (N,) within `radius` bits, sorted."""
    index, found = HashIndex.build(hashes), []
    for start in range(0, len(hashes), chunk):
        query, row = index.within(hashes[start:start + chunk], radius)
        query += start
        found.append(np.column_stack([query, row])[query < row])
    pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def _normalized(rows: np.ndarray) -> np.ndarray:
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)


def _lowest_frequencies(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column in an rfft2 spectrum of SIDE x SIDE of the `count` lowest spatial frequencies but the
    constant, one of each pair that a real image's spectrum holds twice (F(-u, -v) is F(u, v) conjugated)."""
    half = [(row, column) for row in range(-LOW + 1, LOW) for column in range(LOW) if column > 0 or row > 0]
    half.sort(key=lambda frequency: frequency[0] ** 2 + frequency[1] ** 2)
    rows, columns = np.array(half[:count]).T
    return rows % SIDE, columns


FREQUENCY_ROWS, FREQUENCY_COLUMNS = _lowest_frequencies(64)  # the bits of the frequency hash


def _median_bits(values: np.ndarray) -> np.ndarray:
    """(N,) uint64: bit k set where values[:, k] (64 per row) is above its row's median."""
    bits = np.packbits(values > np.median(values, axis=1, keepdims=True), axis=1, bitorder="little")
    return np.ascontiguousarray(bits).view("<u8")[:, 0]


def signatures(grey: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Two candidate descriptors per view, each normalized for brightness and contrast, and a 64-bit hash of
    each: the 8x8 thumbnail (close for copies that keep the layout: re-encoded, resized, brightened, shifted
    into empty margin), hashed by which cells are brighter than its median cell; and the magnitudes of the
    lowest spatial frequencies on a log scale (a shift changes only their phases, so close for copies moved
    across the frame), hashed by which of the 64 lowest are stronger than their median.

    Returns:
        (2, N) uint64 hashes, and the float32 descriptors [thumbnail (N, 64), frequencies (N, 120)].
    """
    grey, count, step = grey.astype(np.float32), len(grey), SIDE // LOW
    thumbs = grey.reshape(count, LOW, step, LOW, step).mean(axis=(2, 4)).reshape(count, -1)
    spectrum = np.abs(np.fft.rfft2(grey - grey.mean(axis=(1, 2), keepdims=True)))
    low = np.concatenate([spectrum[:, :LOW, :LOW], spectrum[:, -LOW + 1:, :LOW]], axis=1)
    hashes = np.stack([_median_bits(thumbs), _median_bits(spectrum[:, FREQUENCY_ROWS, FREQUENCY_COLUMNS])])
    return hashes, [_normalized(thumbs).astype(np.float32),
                    _normalized(np.log1p(low).reshape(count, -1)).astype(np.float32)]


def _nearest(query: np.ndarray, partner: np.ndarray, distance: np.ndarray, count: int) -> np.ndarray:
    """Mask of the `count` nearest partners of each query (ties by partner index)."""
    order = np.lexsort((partner, distance, query))
    rank = np.empty(len(query), np.int64)
    rank[order] = np.arange(len(query)) - np.searchsorted(query[order], query[order])
    return rank < count


def _partners(index: HashIndex, hashes: np.ndarray, own: np.ndarray, neighbors: int,
              radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, row) index arrays: each query hash's indexed rows (but its own row `own[query]`) within the
    smallest of the radii ..., radius - 2, radius bits (from 0 or 1) that holds `neighbors` of them, so that an
    image among thousands of look-alikes stops at a small radius instead of collecting them all. Two bits at a
    time because a hash by the median moves in pairs of bits: a cell that rises above it pushes another below."""
    pending, found = np.arange(len(hashes)), []
    for level in range(radius % 2, radius + 1, 2):
        query, row = index.within(hashes[pending], level)
        query = pending[query]
        other = row != own[query]
        query, row = query[other], row[other]
        done = (np.bincount(query, minlength=len(hashes)) >= neighbors) | (level == radius)
        found.append((query[done[query]], row[done[query]]))
        pending = pending[~done[pending]]
    return np.concatenate([query for query, _ in found]), np.concatenate([row for _, row in found])


def candidates(grey: np.ndarray, usable: np.ndarray, neighbors: int, radius: int, flips: bool) -> np.ndarray:
    """(P, 3) int array of candidate pairs (i, j, mirrored) with i < j: by either descriptor, each image's
    `neighbors` nearest among the images whose hash of that descriptor is near its own (and, with flips, its
    mirror's): within `radius` bits, or less where that already holds `neighbors` of them (see `_partners`).
    Works through CHUNK query images at a time; only the hashes and descriptors of all images are held."""
    members = np.flatnonzero(usable)
    if len(members) < 2:
        return np.zeros((0, 3), int)
    parts = [signatures(grey[members[start:start + CHUNK]]) for start in range(0, len(members), CHUNK)]
    indexes = [HashIndex.build(hashes) for hashes in np.concatenate([hashes for hashes, _ in parts], axis=1)]
    tables = [np.concatenate([descriptors[kind] for _, descriptors in parts]) for kind in range(2)]
    found = [np.zeros((0, 3), np.int64)]
    for mirrored in (False, True) if flips else (False,):
        for start in range(0, len(members), CHUNK):
            views_ = grey[members[start:start + CHUNK]]
            hashes, descriptors = signatures(views_[:, :, ::-1] if mirrored else views_)
            for index, query_hashes, queries, table in zip(indexes, hashes, descriptors, tables):
                own = np.arange(start, start + len(views_))
                query, partner = _partners(index, query_hashes, own, neighbors, radius)
                closeness = np.einsum("ij,ij->i", queries[query], table[partner])
                keep = _nearest(query, partner, -closeness, neighbors)
                first, second = members[own[query[keep]]], members[partner[keep]]
                found.append(np.column_stack([np.minimum(first, second), np.maximum(first, second),
                                              np.full(len(first), int(mirrored))]))
    return np.unique(np.concatenate(found), axis=0)


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


def residuals(grey: np.ndarray, pairs: np.ndarray, sides: np.ndarray, reload: Callable[[int], Image.Image],
              tolerance: float, chunk: int = 1024) -> np.ndarray:
    """The verification residual of each candidate pair: on the 32x32 views first; a pair of larger images that
    correlates closely there but fails is looked at again at up to FULL px, where a shift of a pixel or two is
    a whole-pixel shift again (at 32 px it is a fraction of a pixel, and a detailed photograph no longer
    matches itself). `sides` holds each image's smaller side; `reload(index)` re-opens an image for that second
    look, a few pairs at a time."""
    residual, correlation = _verify(grey, pairs, chunk)
    sides = np.asarray(sides)
    again = np.flatnonzero((residual > tolerance) & (correlation >= RECHECK_CORRELATION)
                           & (np.minimum(sides[pairs[:, 0]], sides[pairs[:, 1]]) >= 2 * SIDE))
    if len(again):
        side = int(min(FULL, np.minimum(sides[pairs[again, 0]], sides[pairs[again, 1]]).min()))
        step = max(1, chunk // 16)
        for part in (again[start:start + step] for start in range(0, len(again), step)):
            involved = np.unique(pairs[part, :2])  # full-size views of these images only
            large = np.stack([edge.canonical_image(reload(index), (side, side), 1)[..., 0] for index in involved])
            compact = np.column_stack([np.searchsorted(involved, pairs[part, 0]),
                                       np.searchsorted(involved, pairs[part, 1]), pairs[part, 2]])
            residual[part] = np.minimum(residual[part], _verify(large.astype(np.float32), compact, step)[0])
    return residual


def near_pairs_from(grey: np.ndarray, usable: np.ndarray, sides: np.ndarray, reload: Callable[[int], Image.Image],
                    neighbors: int, radius: int, tolerance: float, flips: bool) -> list[tuple[int, int, float]]:
    """(i, j, residual) with i < j for every confirmed near-duplicate pair, from the views (see `candidates` and
    `residuals` for the other arguments)."""
    proposed = candidates(grey, usable, neighbors, radius, flips)
    scores = residuals(grey, proposed, sides, reload, tolerance)
    best: dict[tuple[int, int], float] = {}
    for (first, second, _), score in zip(proposed.tolist(), scores.tolist()):
        if score <= tolerance:
            best[(first, second)] = min(score, best.get((first, second), np.inf))
    return [(first, second, round(score, 4)) for (first, second), score in sorted(best.items())]


def near_pairs(images: list[Image.Image | None], neighbors: int, tolerance: float, flips: bool = False,
               radius: int = RADIUS) -> list[tuple[int, int, float]]:
    """(i, j, residual) with i < j for every confirmed near-duplicate pair of a list of images."""
    grey, usable = views(images)
    return near_pairs_from(grey, usable, _sides(images), images.__getitem__, neighbors, radius, tolerance, flips)


def _sides(images: list[Image.Image | None]) -> np.ndarray:
    """Each image's smaller side in pixels (0 where unreadable)."""
    return np.array([min(image.size) if image is not None else 0 for image in images])


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


def image_groups_from(hashes: list[str | None], grey: np.ndarray, usable: np.ndarray, sides: np.ndarray,
                      reload: Callable[[int], Image.Image], settings) -> dict:
    """Content hashes, exact-duplicate groups, confirmed near-duplicate pairs and the cluster of every image,
    from what one streaming pass keeps per image (never the decoded images).

    Args:
        hashes: each image's content hash (`sources.pixel_hash`), None where unreadable.
        grey: (N, SIDE, SIDE) uint8 or float32 grey views by the canonical conversion (any value where not usable).
        usable: (N,) bool, readable and at least MIN_SIDE px on both sides.
        sides: (N,) each image's smaller side in pixels.
        reload: index -> the PIL image, re-opened only for the second look at up to FULL px (see `residuals`).
        settings: the data section (`near_duplicates`, `near_duplicate_candidates`, `near_duplicate_radius`,
            `near_duplicate_tolerance`, `near_duplicate_flips`).

    Returns:
        {"hashes": the content hashes, "exact": exact-duplicate groups, "near_pairs": [(i, j, residual)],
        "cluster": (N,) cluster id per image (its smallest member's index)}.
    """
    exact = exact_groups(hashes)
    pairs = near_pairs_from(grey, usable, sides, reload, settings.near_duplicate_candidates,
                            settings.near_duplicate_radius, settings.near_duplicate_tolerance,
                            settings.near_duplicate_flips) if settings.near_duplicates else []
    exact_pairs = [(group[0], other) for group in exact for other in group[1:]]
    return {"hashes": hashes, "exact": exact, "near_pairs": pairs,
            "cluster": clusters(len(hashes), exact_pairs + pairs)}


def image_groups(images: list[Image.Image | None], settings) -> dict:
    """`image_groups_from` for a list of decoded images (None where unreadable)."""
    grey, usable = views(images)
    hashes = [sources.pixel_hash(image) if image is not None else None for image in images]
    return image_groups_from(hashes, grey, usable, _sides(images), images.__getitem__, settings)


def find_drops(hashes: list, labels: np.ndarray, rules, ids, class_names=()) -> dict[int, tuple]:
    """index -> (rule, detail) for every exact duplicate or label conflict the cleaning rules
    (`config.CleanConfig`) drop; details name items by id and labels by class name."""
    name = (lambda label: class_names[label]) if len(class_names) else (lambda label: label)
    drops = {}
    for group in exact_groups(hashes):
        found = sorted({name(label) for label in labels[group].tolist()}, key=str)
        if len(found) > 1 and rules.drop_label_conflicts:
            for index in group:
                drops[index] = ("drop_label_conflicts", f"same content carries labels {', '.join(map(str, found))}: "
                                + ", ".join(ids[other] for other in group))
        elif rules.drop_exact_duplicates:
            for index in group[1:]:
                drops[index] = ("drop_exact_duplicates", f"identical to {ids[group[0]]}")
    return drops
