"""Splits without leakage, and what later stages read of them.

The pure parts of splitting (seeded stratified, grouped or temporal assignment, the ratio and leakage checks,
fold numbers for cross-validation, the normalizer's statistics) and the reading side: `load_split` gives the
training-side arrays (train and val; nothing before evaluate reads test), `fold_views` the k folds of
train+val, and `item_hash` is the hash of content and label that the manifest records and evaluate checks.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    TimeSeriesSplit,
    train_test_split,
)
from tqdm import tqdm

import deploy.edge.predict as edge
from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.core.errors import DataError, StageError
from pipelines.data import duplicates, readers, shards

SPLITS = ("train", "val", "test")
MANIFEST = "split_manifest.json"


class LeakageError(DataError):
    """Content, a near-duplicate cluster, a group or time order spans two splits."""


@dataclasses.dataclass
class Assignment:
    """What a kind's `split` decided and wrote: the indices of each split and what the manifest records per
    item. `grouping` holds one group id per item (items of a group stay in one split); `stratify` the labels the
    assignment kept balanced (None when not stratified), which the cross-validation folds keep too."""

    parts: dict[str, np.ndarray]
    ids: np.ndarray
    labels: np.ndarray
    hashes: list[str]  # content and label of each stored item: what evaluate checks
    grouping: np.ndarray
    stratify: np.ndarray | None = None
    content: list[str] | None = None  # content alone, when it differs from what `hashes` cover (tables)
    cluster: np.ndarray | None = None  # near-duplicate clusters (images)
    groups: np.ndarray | None = None  # a declared group column, or recordings (signals)
    times: np.ndarray | None = None
    streams: np.ndarray | None = None  # one timeline per stream (signals cut in time)



def identity(folder: Path) -> str:
    """The split's one identity: the content hash of its manifest (every item's id, label, hash and split). The
    champion's split tag, the search study's name and the test ledger all key on it."""
    return workspace.sha256_file(Path(folder) / MANIFEST)


def content_hash(item: np.ndarray) -> str:
    """Hash of one stored item's content alone (canonical uint8 image or encoded feature row): what groups
    identical items."""
    return workspace.sha256_bytes(np.ascontiguousarray(item).tobytes())


def item_hash(item: np.ndarray, label) -> str:
    """Hash of one stored item with its label: what the manifest records, so a label changed on disk is
    caught like changed pixels."""
    return workspace.sha256_bytes(np.ascontiguousarray(item).tobytes() + f"|label={label!r}".encode())


def group_ids(hashes: list[str], *relations: np.ndarray | None) -> np.ndarray:
    """One id per item; items sharing a content hash or a value of any relation share the id."""
    pairs = []
    for relation in (np.array(hashes), *[r for r in relations if r is not None]):
        first = {}
        for index, key in enumerate(relation.tolist()):
            pairs.append((first.setdefault(key, index), index))
    return duplicates.clusters(len(hashes), pairs)


def holdout(indices: np.ndarray, fraction: float, labels: np.ndarray | None, groups: np.ndarray,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held out) with about `fraction` of the items held out, groups never cut."""
    if len(np.unique(groups[indices])) == len(indices):  # no group with two members: a plain split
        strata = labels[indices] if labels is not None else None
        rest, held = train_test_split(indices, test_size=fraction, stratify=strata, random_state=seed)
        return rest, held
    if labels is not None:
        folds = StratifiedGroupKFold(n_splits=max(2, round(1 / fraction)), shuffle=True, random_state=seed)
        rest, held = next(folds.split(indices, labels[indices], groups[indices]))
    else:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        rest, held = next(splitter.split(indices, groups=groups[indices]))
    return indices[rest], indices[held]


def barred_items(content: list[str], used: set[str]) -> np.ndarray | None:
    """Which items an earlier test evaluation already saw (their content hash is in the ledger's `used`): what
    `split.exclude_used_from_test` keeps out of a new test split. None when there are none."""
    barred = np.array([key in used for key in content], dtype=bool)
    return barred if barred.any() else None


def test_candidates(groups: np.ndarray, barred: np.ndarray | None, fraction: float) -> tuple[np.ndarray, float]:
    """(the items a test split may take, the share of them it takes to hold `fraction` of all items): every item
    whose group holds no `barred` item.

    Raises:
        DataError: too few unused items remain for a test split of that size.
    """
    indices = np.arange(len(groups))
    if barred is None:
        return indices, fraction
    candidates = indices[~np.isin(groups, np.unique(groups[barred]))]
    share = fraction * len(indices) / max(1, len(candidates))
    if share > 0.9:
        raise DataError(f"split: {int(barred.sum())} of {len(indices)} items were in an earlier evaluated test "
                        f"split; the {len(candidates)} unused items (whole groups) cannot hold a test split of "
                        f"{fraction:.2f} of the data. Add new data, lower split.test_fraction, or evaluate with "
                        "--reuse-test")
    return candidates, share


def check_unused_test(test: np.ndarray, barred: np.ndarray | None, ids: np.ndarray) -> None:
    """A temporal split's test block is fixed (the latest items): it may not hold a used item."""
    if barred is not None and barred[test].any():
        used = [str(ids[index]) for index in test[barred[test]][:5]]
        raise DataError(f"split: the temporal test block holds {int(barred[test].sum())} items of an earlier "
                        f"evaluated test split (e.g. {used}); a temporal split needs data recorded after them for "
                        "a new test split, or evaluate with --reuse-test")


def check_strata(labels: np.ndarray | None, ids: np.ndarray, class_names: list[str]) -> None:
    """A stratified split needs at least two items of every class (one for test, one for the rest).

    Raises:
        DataError: naming the classes with fewer and their items.
    """
    if labels is None:
        return
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    rare = [index for index, count in enumerate(counts) if count == 1]
    if rare:
        named = ", ".join(f"'{class_names[index]}' ({ids[np.flatnonzero(labels == index)[0]]})" for index in rare[:5])
        raise DataError(f"split: class(es) with a single item cannot be stratified: {named}; add items, leave the "
                        "class out (data.classes), or set split.strategy: random")


def assign(labels: np.ndarray | None, groups: np.ndarray, times: np.ndarray | None,
           rules: config_module.SplitConfig, barred: np.ndarray | None = None,
           ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Indices per split. `labels` is None unless stratifying; `barred` items (and their groups) never go to test
    (`barred_items`)."""
    indices = np.arange(len(groups))
    if rules.strategy == "temporal":
        order = np.argsort(times, kind="stable")
        n_test, n_val = round(rules.test_fraction * len(order)), round(rules.val_fraction * len(order))
        parts = {"train": order[: len(order) - n_test - n_val], "val": order[len(order) - n_test - n_val:
                 len(order) - n_test], "test": order[len(order) - n_test:]}
        check_unused_test(parts["test"], barred, indices if ids is None else ids)
    else:
        candidates, share = test_candidates(groups, barred, rules.test_fraction)
        rest, test = holdout(candidates, share, labels, groups, rules.seed)
        if barred is not None:  # the barred items join the rest
            rest = np.setdiff1d(indices, test)
        train, val = holdout(rest, rules.val_fraction / (1.0 - rules.test_fraction), labels, groups, rules.seed)
        parts = {"train": train, "val": val, "test": test}
    return {name: np.sort(part) for name, part in parts.items()}


def predefined(given_split: np.ndarray, labels: np.ndarray | None, groups: np.ndarray,
               rules: config_module.SplitConfig, barred: np.ndarray | None = None,
               ids: np.ndarray | None = None, what: str = "items") -> dict[str, np.ndarray]:
    """Indices per split as the dataset gives them (`split.strategy: predefined`): its test part kept as it is,
    its val part too; when it gives none, validation is carved from its training part, about
    `val_fraction / (1 - test_fraction)` of it as the other strategies hold, groups whole and stratified by
    `labels` (None: not stratified). The leakage check still runs on the result.

    Raises:
        DataError: the data gives no training or no test item, or a test item an earlier evaluation used.
    """
    given_split = np.asarray(given_split).astype(str)
    indices = np.arange(len(given_split))
    parts = {name: indices[given_split == name] for name in SPLITS}
    for name in ("train", "test"):
        if not len(parts[name]):
            raise DataError(f"split.strategy predefined: the data names no {name} {what} (splits given: "
                            f"{sorted(set(given_split.tolist()))})")
    check_unused_test(parts["test"], barred, indices if ids is None else ids)
    if not len(parts["val"]):
        share = rules.val_fraction / (1.0 - rules.test_fraction)
        if labels is not None:  # stratified: at least one item (group) of each class in validation
            train = parts["train"]
            share = max(share, len(np.unique(labels[train])) / max(1, len(np.unique(groups[train]))))
        try:
            parts["train"], parts["val"] = holdout(parts["train"], share, labels, groups, rules.seed)
        except ValueError as error:  # too few items or groups of a class in the given training part
            raise DataError(f"split.strategy predefined: cannot carve a validation share of {share:.2f} from the "
                            f"{len(parts['train'])} given training {what} ({error}); give a val part") from None
    return {name: np.sort(part) for name, part in parts.items()}


def given_split(clean_folder: Path) -> np.ndarray:
    """The dataset's own split of each clean item (`clean_given.npy`).

    Raises:
        DataError: clean stored none (the source names no split).
    """
    path = Path(clean_folder) / "clean_given.npy"
    if not path.is_file():
        raise DataError(f"{clean_folder}: the data names no split of its own; split.strategy predefined needs "
                        "split.column or split.file (sensor_csv), a split column (csv), train/ and test/ "
                        "sub-folders (image_folder), or basic_motions' TRAIN and TEST files")
    return np.load(path, allow_pickle=False)


def check_ratios(parts: dict, groups: np.ndarray, ids: np.ndarray, rules: config_module.SplitConfig) -> None:
    """Grouping can make the requested ratios impossible (one huge near-duplicate cluster, say): say so."""
    total = sum(len(part) for part in parts.values())
    wanted = {"train": 1.0 - rules.val_fraction - rules.test_fraction, "val": rules.val_fraction,
              "test": rules.test_fraction}
    keys, sizes = np.unique(groups, return_counts=True)
    # Groups make the ratios approximate; a split with under half or over twice its share is not a split.
    off = {name: len(parts[name]) / total for name in SPLITS
           if not 0.5 * wanted[name] <= len(parts[name]) / total <= 2.0 * wanted[name]}
    if off:
        largest = [str(ids[index]) for index in np.flatnonzero(groups == keys[sizes.argmax()])[:5]]
        got = ", ".join(f"{name} {share:.2f}" for name, share in off.items())
        raise DataError(f"split: groups are too large for the requested ratios (got {got}); the largest group "
                         f"holds {sizes.max()} of {total} items, e.g. {largest}. Lower "
                         "data.near_duplicate_tolerance (fewer images merged as near-duplicates), or check "
                         "data.group_column")


def analysis_folds(count: int, labels: np.ndarray | None, groups: np.ndarray | None, times: np.ndarray | None,
                   rules: config_module.SplitConfig, folds: int = 3) -> tuple[np.ndarray, list, str]:
    """Where analyze's baseline may look: (the items outside a test share held out by the split's rules (its
    seed and fractions, groups whole, the latest items for a temporal split), the cross-validation
    folds over them as (train, validation) positions in that pool, a description). The folds keep groups whole
    and, for a temporal split, train on the past only (scikit-learn's TimeSeriesSplit), so the baseline's
    score is not flattered by rows a model will never train on."""
    grouping = np.arange(count) if groups is None else np.unique(np.asarray(groups).astype(str),
                                                                 return_inverse=True)[1]
    temporal = rules.strategy == "temporal" and times is not None
    stratify = labels if rules.strategy == "stratified" and labels is not None else None
    rules = dataclasses.replace(rules, strategy="temporal" if temporal else
                                "random" if rules.strategy == "temporal" else rules.strategy)
    try:
        parts = assign(stratify, grouping, times if temporal else None, rules)
        pool, held = np.sort(np.concatenate([parts["train"], parts["val"]])), f"{rules.test_fraction:.0%} held out"
    except ValueError:  # too few items or groups to set a test share aside: say so
        pool, held = np.arange(count), "nothing held out (too few items or groups for a test share)"
    if temporal:
        order = pool[np.argsort(np.asarray(times)[pool], kind="stable")]
        positions = np.searchsorted(pool, order)
        found = [(positions[train], positions[held]) for train, held in TimeSeriesSplit(folds).split(order)]
        return pool, found, f"{folds} forward folds in time, {held} (the latest)"
    grouped = len(np.unique(grouping[pool])) < len(pool)
    strata = stratify[pool] if stratify is not None else None
    if grouped:
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=rules.seed) if strata is not None \
            else GroupKFold(folds)
    else:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=rules.seed) if strata is not None \
            else KFold(folds, shuffle=True, random_state=rules.seed)
    found = list(splitter.split(pool, strata, grouping[pool] if grouped else None))
    return pool, found, (f"{folds}-fold cross-validation{' by group' if grouped else ''}, {held} as the split "
                         "would hold out its test share")


FORWARD = "forward_chaining"  # the manifest's `fold_scheme` for a temporal split's folds


def forward_blocks(pool: np.ndarray, times: np.ndarray, streams: np.ndarray | None, folds: int) -> dict:
    """item index -> block 0..folds over train+val in time order (within each stream when items name one):
    fold j (1..folds) trains on the blocks before j and validates on block j, so no fold validates on rows
    earlier than any it trains on."""
    assigned = {}
    owners = streams[pool] if streams is not None else np.zeros(len(pool), dtype=int)
    for owner in np.unique(owners):
        members = pool[owners == owner]
        ordered = members[np.argsort(times[members], kind="stable")]
        for rank, index in enumerate(ordered):
            assigned[int(index)] = int(rank * (folds + 1) // len(ordered))
    return assigned


def fold_numbers(parts: dict, labels: np.ndarray | None, groups: np.ndarray, rules: config_module.SplitConfig,
                 times: np.ndarray | None = None, streams: np.ndarray | None = None) -> dict:
    """item index -> fold number over train+val, for cross-validated search: shuffled (stratified, grouped)
    k-fold, or for a temporal split the block of `forward_blocks`."""
    pool = np.sort(np.concatenate([parts["train"], parts["val"]]))
    if rules.strategy == "temporal":
        return forward_blocks(pool, times, streams, rules.folds)
    grouped = len(np.unique(groups[pool])) < len(pool)
    if labels is not None:
        splitter = (StratifiedGroupKFold(rules.folds, shuffle=True, random_state=rules.seed) if grouped
                    else StratifiedKFold(rules.folds, shuffle=True, random_state=rules.seed))
    else:
        splitter = GroupKFold(rules.folds) if grouped else KFold(rules.folds, shuffle=True, random_state=rules.seed)
    assigned = {}
    for number, (_, held) in enumerate(splitter.split(pool, labels[pool] if labels is not None else None,
                                                      groups[pool] if grouped else None)):
        assigned.update({int(pool[index]): number for index in held})
    return assigned


def manifest(assignment: Assignment, fold_of: dict, fold_scheme: str = "") -> dict:
    """The split manifest: counts per split, and per item (sorted by id) its id, label, hash and split, with its
    content hash, cluster, group, time, stream and fold where the kind records them."""
    a = assignment
    items = []
    for name in SPLITS:
        for index in a.parts[name]:
            item = {"id": str(a.ids[index]), "label": a.labels[index].item(), "sha256": a.hashes[index], "split": name}
            if a.content is not None:
                item["content"] = a.content[index]
            if a.cluster is not None:
                item["cluster"] = int(a.cluster[index])
            if a.groups is not None:
                item["group"] = str(a.groups[index])
            if a.times is not None:
                item["time"] = a.times[index].item() if hasattr(a.times[index], "item") else str(a.times[index])
            if a.streams is not None:
                item["stream"] = str(a.streams[index])
            if int(index) in fold_of:
                item["fold"] = fold_of[int(index)]
            items.append(item)
    items.sort(key=lambda item: item["id"])
    result = {"counts": {name: int(len(a.parts[name])) for name in SPLITS}, "items": items}
    if fold_scheme:
        result["fold_scheme"] = fold_scheme
    return result


def check_leakage(items: list[dict], temporal: bool = False) -> None:
    """Raises LeakageError naming the items when content, a cluster or a group spans splits, or time runs back."""
    problems = []
    content_key = "content" if items and "content" in items[0] else "sha256"
    for key, what in ((content_key, "content"), ("cluster", "near-duplicate cluster"), ("group", "group")):
        spans: dict = {}
        for item in items:
            if key in item:
                spans.setdefault(item[key], []).append(item)
        for members in spans.values():
            if len({item["split"] for item in members}) > 1:
                named = ", ".join(f"{item['id']} ({item['split']})" for item in members[:6])
                problems.append(f"{what} spans splits: {named}")
    streams: dict = {}  # one timeline, or one per stream (a recording) when items name theirs
    for item in items:
        streams.setdefault(item.get("stream"), []).append(item)
    for members in streams.values():
        times = {name: [item["time"] for item in members if item["split"] == name and "time" in item]
                 for name in SPLITS}
        for early, later in (("train", "val"), ("val", "test"), ("train", "test")) if temporal else ():
            if times[early] and times[later] and max(times[early]) > min(times[later]):
                late = [item["id"] for item in members if item["split"] == early and item["time"] > min(times[later])]
                problems.append(f"temporal order broken: {early} items {late[:6]} are later than the earliest "
                                f"{later} item")
    if problems:
        raise LeakageError(f"leakage check failed ({len(problems)} problem(s)): " + "; ".join(problems[:10]))


CHUNK_BYTES = 64 * 1024 * 1024  # float64 working memory of the normalizer's pass


def normalizer(x_train, settings: config_module.NormalizeConfig, per_feature: bool) -> dict:
    """Statistics for a Keras Normalization layer, fitted on the training split only.

    One pass over chunks of items, in float64 (Chan's pairwise combination of chunk means and squared
    deviations), so the working memory is one chunk, not a float64 copy of the split (8 bytes per pixel).
    Tables are scaled in their fitted preprocessing instead (see tables.preprocessor), so their model needs none.
    """
    x_train = readers.reader(x_train)
    axis = tuple(range(len(x_train.shape) - 1)) if per_feature or settings.scope == "per_channel" else None
    rows = max(1, CHUNK_BYTES // max(1, 8 * int(np.prod(x_train.shape[1:]))))
    parts = (items for _, items in x_train.chunks(rows))
    progress = tqdm(total=len(x_train), desc="normalizer", unit="img", disable=len(x_train) < 2000)
    count, mean, squares, low, high = 0, 0.0, 0.0, None, None
    for part in parts:
        progress.update(len(part))
        chunk = part.astype(np.float64)
        size = chunk.size // (np.size(chunk.mean(axis=axis)) if axis is not None else 1)
        chunk_mean = chunk.mean(axis=axis)
        delta, total = chunk_mean - mean, count + size
        squares = squares + chunk.var(axis=axis) * size + delta ** 2 * count * size / total
        mean, count = mean + delta * size / total, total
        low = chunk.min(axis=axis) if low is None else np.minimum(low, chunk.min(axis=axis))
        high = chunk.max(axis=axis) if high is None else np.maximum(high, chunk.max(axis=axis))
    progress.close()
    if settings.method == "zscore":
        variance = squares / max(count, 1)
    else:
        mean, variance = low, (high - low) ** 2
    variance = np.where(np.asarray(variance) > 0, variance, 1.0)
    return {"fitted_on": "train", "method": settings.method, "scope": "per_feature" if per_feature else settings.scope,
            "mean": np.atleast_1d(mean).tolist(), "variance": np.atleast_1d(variance).tolist()}


@dataclasses.dataclass
class SplitData:
    x: dict[str, readers.SplitReader]
    y: dict[str, np.ndarray]
    dataset: dict  # kind, task, class_names, input_shape (and feature_names for tables)
    normalizer: dict

    @property
    def task(self) -> str:
        return self.dataset["task"]

    @property
    def class_names(self) -> list[str]:
        return self.dataset["class_names"]

    @property
    def num_outputs(self) -> int:
        return len(self.class_names) if self.task == "classification" else 1


def slice_values(folder: Path, name: str) -> np.ndarray | None:
    """Each item's value of the declared `data.slice_column` in one split (text), or None when none is declared."""
    path = Path(folder) / f"{name}_slice.npy"
    return np.load(path, allow_pickle=False) if path.is_file() else None


def split_items(folder: Path, name: str, verify: bool = True) -> readers.SplitReader:
    """One split's inputs as a reader: keys into clean's shards (checked against their checksums), or the
    array the split stored (windows, encoded rows)."""
    folder = Path(folder)
    dataset = workspace.read_json(folder / "dataset.json")
    if "shards" not in dataset:  # the split stored its inputs as arrays
        return readers.ArrayReader(workspace.load_arrays(folder, name, "x")[0])
    location = dataset["shards"]
    location = location if "://" in location else os.path.normpath(folder / location)
    keys, = workspace.load_arrays(folder, name, "keys")
    return shards.Items(shards.open_shards(location, verify), keys)


def predict(predictors: dict, x, each=None) -> dict[str, np.ndarray]:
    """Every predictor's outputs over a whole split in the split's order, from one streaming pass; Keras
    models get float32 batches, LiteRT models (`edge.LiteRTModel`) quantize their own inputs.
    `each(positions, items)` sees every chunk too (hashes computed on the same pass)."""
    outputs, x = {}, readers.reader(x)
    for positions, items in x.chunks(256):
        if each is not None:
            each(positions, items)
        for name, model in predictors.items():
            out = model.predict(items) if isinstance(model, edge.LiteRTModel) else \
                model.predict_on_batch(items.astype(np.float32))
            outputs.setdefault(name, np.zeros((len(x), *np.shape(out)[1:]), np.float32))[positions] = out
    return outputs


def load_split(folder: Path, splits: tuple[str, ...] = ("train", "val"), in_memory_mb: float = 0) -> SplitData:
    """Training-side splits only by default: nothing before evaluate reads the test split. Images stay in
    their shards (read as they stream), so a split larger than memory loads; a split of at most `in_memory_mb`
    is read into memory once (`runtime.in_memory_mb`: on small data an epoch is shorter than the streaming
    pipeline's start)."""
    x, y = {}, {}
    for number, name in enumerate(splits):
        x[name] = split_items(folder, name, verify=number == 0).in_memory(in_memory_mb)  # shards checked once
        y[name], = workspace.load_arrays(folder, name, "y")
    return SplitData(x, y, workspace.read_json(folder / "dataset.json"),
                     workspace.read_json(folder / "normalizer.json"))


def fold_views(split_folder: Path, data: SplitData, in_memory_mb: float = 0) -> list[SplitData]:
    """k (train, val) views of train+val from the fold numbers in the split manifest, each side read into
    memory when it takes at most `in_memory_mb` (as `load_split` does)."""
    manifest = workspace.read_json(split_folder / MANIFEST)
    fold_of = {item["id"]: item.get("fold") for item in manifest["items"] if item["split"] != "test"}
    if any(value is None for value in fold_of.values()):
        raise StageError(f"{split_folder / MANIFEST}: no fold numbers; rerun split with split.folds >= 2")
    ids = np.concatenate([workspace.load_arrays(split_folder, name, "ids")[0] for name in ("train", "val")])
    # Both sides as stored (one may have been read into memory, the other not), joined; each fold a subset.
    pool = split_items(split_folder, "train", verify=False).joined(split_items(split_folder, "val", verify=False))
    pick = lambda mask: pool.subset(mask).in_memory(in_memory_mb)  # noqa: E731
    y = np.concatenate([data.y["train"], data.y["val"]])
    number = np.array([fold_of[str(item)] for item in ids])
    if manifest.get("fold_scheme") == FORWARD:  # train on the past blocks, validate on the next
        masks = [(number < k, number == k) for k in sorted(set(number)) if k > 0]
    else:
        masks = [(number != k, number == k) for k in sorted(set(number))]
    return [dataclasses.replace(data, x={"train": pick(train), "val": pick(val)}, y={"train": y[train], "val": y[val]},
                                dataset={**data.dataset, "view": f"fold {fold} of {len(masks)}"})
            for fold, (train, val) in enumerate(masks, 1)]
