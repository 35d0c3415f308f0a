"""Images: a folder of class sub-folders or scikit-learn's digits.

Analyze profiles the files in one pass; clean decodes each file once into canonical uint8 squares written to
TFRecord shards (pipelines/data/shards.py), finds exact and near duplicates and label conflicts; split writes
keys into the shards, never pixels, with near-duplicate clusters kept in one split, and fits the normalizer in
one chunked pass over the training records. The device resizes and converts a photo; the model normalizes.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipelines.core import config as config_module
from pipelines.core import figures, workspace
from pipelines.data import duplicates, given, health, shards, sources, splits
from pipelines.data.splits import Assignment

NAME = "images"


def read(config: config_module.Config) -> sources.RawImages:
    return sources.load(config.data, config.root, config.split)


def _odd(values: dict[str, str]) -> dict[str, list[str]]:
    """For every value but the most common: the ids that have it (at most 20 each)."""
    counts = collections.Counter(values.values())
    common = counts.most_common(1)[0][0] if counts else None
    odd = collections.defaultdict(list)
    for item, value in values.items():
        if value != common and len(odd[value]) < 20:
            odd[value].append(item)
    return dict(odd)


def profile(raw: sources.RawImages, config: config_module.Config, folder: Path) -> tuple[dict, dict]:
    """Balance, sizes and modes (naming the files of every odd one), unreadable files, exact duplicates, label
    conflicts and the baseline, from one pass over the files that keeps a small record per image (its size,
    mode, bands, content hash and a 16x16 grey thumbnail for the baseline). Near-duplicates are verified and
    clustered once, by clean (near_duplicates.json)."""
    sizes, modes, bands, hashes, thumbs = {}, {}, collections.Counter(), [None] * len(raw.images), {}
    for index, image in sources.scan(raw, "analyze"):
        item = raw.ids[index]
        sizes[item], modes[item] = f"{image.size[0]}x{image.size[1]}", image.mode
        bands[str(len(image.getbands()))] += 1
        hashes[index] = sources.pixel_hash(image)
        thumbs[index] = np.asarray(image.convert("L").resize((16, 16)), dtype=np.uint8).ravel()
    sources.check_present(raw)
    exact = duplicates.exact_groups(hashes)
    names, labels = raw.class_names, raw.labels
    conflicts = [group for group in exact if len(set(labels[group].tolist())) > 1]
    counts = np.bincount(labels, minlength=len(names))
    report = {
        "source": raw.origin, "kind": NAME, "task": raw.task, "items": len(raw.images),
        "class_counts": {name: int(count) for name, count in zip(names, counts)},
        "empty_classes": sources.empty_classes(raw),
        "imbalance_ratio": float(counts.max() / max(counts.min(), 1)),
        "sizes": dict(collections.Counter(sizes.values()).most_common(20)),
        "odd_sizes": _odd(sizes),
        "modes": dict(collections.Counter(modes.values())),
        "odd_modes": _odd(modes),
        "channels": dict(bands),
        "unreadable": {raw.ids[index]: problem for index, problem in sorted(raw.problems.items())},
        "exact_duplicate_groups": [[raw.ids[index] for index in group] for group in exact],
        "exact_duplicate_extra_items": int(sum(len(group) - 1 for group in exact)),
        "label_conflicts": [[f"{raw.ids[index]} ({names[labels[index]]})" for index in group]
                            for group in conflicts],
        "baseline": baseline(thumbs, labels, hashes, config.split),
    }
    if config.health.action != "none":  # label issues on the thumbnails, outside the test share
        keep = np.array(sorted(thumbs))
        report["label_health"] = health.summary(np.stack([thumbs[index] for index in keep]).astype(np.float32),
                                                labels[keep], np.array([hashes[i] for i in keep], dtype=str),
                                                [raw.ids[index] for index in keep], names, config)
    _sample_grid(raw, folder / "samples.png")
    return report, {"analyze/exact_duplicates": report["exact_duplicate_extra_items"],
                    "analyze/unreadable": len(report["unreadable"])}


def baseline(thumbs: dict[int, np.ndarray], labels: np.ndarray, hashes: list, rules: config_module.SplitConfig) -> dict:
    """Logistic regression on small flattened greyscale images (16x16), cross-validated accuracy on the images
    outside the share the split would hold out for test, identical images kept in one fold
    (`splits.analysis_folds`)."""
    keep = np.array(sorted(thumbs))
    pool, folds, how = splits.analysis_folds(len(keep), labels[keep], np.array([hashes[i] for i in keep], dtype=str),
                                             None, rules)
    features = np.stack([thumbs[index] for index in keep[pool]]).astype(np.float32)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=rules.seed))
    scores = cross_val_score(model, features, labels[keep[pool]], cv=folds)
    return {"model": "logistic regression on 16x16 grey pixels", "metric": "accuracy", "cv_folds": len(folds),
            "evaluated_on": how, "score_mean": float(scores.mean()), "score_std": float(scores.std())}


def _sample_grid(raw: sources.RawImages, path: Path) -> None:
    rows = min(len(raw.class_names), 10)
    figure, axes = plt.subplots(rows, 8, figsize=(8, rows), squeeze=False)
    for row in range(rows):
        members = [index for index in np.flatnonzero(raw.labels == row) if index not in raw.problems][:8]
        for column in range(8):
            axes[row, column].axis("off")
            if column < len(members):
                axes[row, column].imshow(raw.images[members[column]].convert("RGB"))
    figure.suptitle("Samples per class (rows)")
    figures.save(figure, path, dpi=80, tight=False)


def near_duplicate_report(raw: sources.RawImages, groups: dict, folder: Path) -> dict:
    """Writes near_duplicates.json (confirmed pairs, clusters largest first) and a grid of the largest clusters,
    so a user sees what was merged; returns the counts."""
    names = raw.class_names
    pairs = [[raw.ids[a], raw.ids[b], score, names[raw.labels[a]], names[raw.labels[b]]]
             for a, b, score in groups["near_pairs"]]
    members = collections.defaultdict(list)
    for index, cluster in enumerate(groups["cluster"]):
        members[int(cluster)].append(index)
    clusters = sorted((group for group in members.values() if len(group) > 1), key=lambda group: (-len(group),
                                                                                                    group[0]))
    workspace.write_json(folder / "near_duplicates.json", {
        "pairs": pairs, "clusters": [[raw.ids[index] for index in group] for group in clusters]})
    if clusters:
        cluster_grid(raw, clusters[:8], folder / "near_duplicate_clusters.png")
    return {"near_duplicate_pairs": len(pairs), "near_duplicate_pairs_across_classes": sum(
        pair[3] != pair[4] for pair in pairs), "duplicate_clusters": len(clusters),
        "largest_cluster": max((len(group) for group in clusters), default=1)}


def cluster_grid(raw: sources.RawImages, clusters: list[list[int]], path: Path) -> None:
    """One row per cluster (largest first), its members side by side with their ids."""
    columns = min(8, max(len(group) for group in clusters))
    figure, axes = plt.subplots(len(clusters), columns, figsize=(1.4 * columns, 1.5 * len(clusters)),
                                squeeze=False)
    for row, group in enumerate(clusters):
        for column in range(columns):
            axis = axes[row, column]
            axis.axis("off")
            if column < len(group):
                axis.imshow(raw.images[group[column]].convert("RGB"))
                axis.set_title(raw.ids[group[column]][-18:], fontsize=6)
    figure.suptitle("Near-duplicate clusters (largest first): each row lands in one split")
    figures.save(figure, path)


def clean(raw: sources.RawImages, config: config_module.Config, folder: Path) -> tuple[list, dict, dict]:
    """One pass over the files: each image is decoded once, hashed, reduced to its near-duplicate view and
    written in canonical form to the shards; the drop rules then pick the items (`clean_key` names their
    records). Memory holds a small record per image, never the images."""
    size, channels = config.data.image_size, config.data.channels
    count = len(raw.images)
    hashes, content, sha = [None] * count, [""] * count, [""] * count
    keys, sides = np.full(count, -1, np.int64), np.zeros(count, np.int64)
    grey = np.zeros((count, duplicates.SIDE, duplicates.SIDE), np.uint8)
    changed = {}
    writer = shards.Writer(folder / "shards", (size, size, channels), config.data.shard_records)
    for index, image in sources.scan(raw, "clean"):
        hashes[index], sides[index] = sources.pixel_hash(image), min(image.size)
        canonical = sources.to_canonical(image, size, channels)
        keys[index] = writer.write(canonical)
        content[index] = splits.content_hash(canonical)
        sha[index] = splits.item_hash(canonical, raw.labels[index].item())
        if sides[index] >= duplicates.MIN_SIDE:
            grey[index] = sources.to_canonical(image, duplicates.SIDE, 1)[..., 0]
        if image.size != (size, size) or image.mode != ("L" if channels == 1 else "RGB"):
            changed[index] = (f"{image.mode} {image.size[0]}x{image.size[1]} -> {size}x{size}x{channels} uint8"
                              + "".join(f"; {rule}" for rule in sources.conversion_rules(image)))
    writer.close()
    sources.check_present(raw)
    sources.require_every_class(raw)
    usable = (keys >= 0) & (sides >= duplicates.MIN_SIDE)
    groups = duplicates.image_groups_from(hashes, grey, usable, sides, raw.images.__getitem__, config.data)
    drops = {index: ("drop_unreadable", problem) for index, problem in raw.problems.items()}
    shared = given.across(groups["hashes"], raw.given_split)  # copies in two given splits: split's leakage check
    drops.update({index: rule for index, rule in duplicates.find_drops(
        groups["hashes"], raw.labels, config.clean, raw.ids, raw.class_names).items() if index not in drops
        and not (index in shared and rule[0] == "drop_exact_duplicates")})
    keep = np.array([index for index in range(count) if index not in drops], dtype=np.int64)
    log = [(raw.ids[index], rule, "dropped", detail) for index, (rule, detail) in sorted(drops.items())]
    log += [(raw.ids[index], "canonical_form", "changed", detail) for index, detail in sorted(changed.items())
            if index not in drops]
    # Near-duplicate clusters are found here, once, on the raw images, and travel to split as groups.
    workspace.save_arrays(folder, "clean", key=keys[keep], y=raw.labels[keep], ids=np.array(raw.ids, dtype=str)[keep],
                          cluster=groups["cluster"][keep], content=np.array(content, dtype=str)[keep],
                          sha256=np.array(sha, dtype=str)[keep],
                          **({"given": np.asarray(raw.given_split, dtype=str)[keep]}
                             if raw.given_split is not None else {}))  # the folder's own split (predefined)
    return log, {"items_in": count, "items_out": len(keep), "dropped": len(drops),
                 "changed": sum(index not in drops for index in changed),
                 **near_duplicate_report(raw, groups, folder)}, {}


def split(clean_folder: Path, dataset: dict, config: config_module.Config, folder: Path,
          used: set[str] = frozenset()) -> tuple[Assignment, dict]:
    """Keys into clean's shards per split (the pixels stay there); identical and near-duplicate images share a
    group; the normalizer is fitted in one chunked pass over the training records."""
    keys, y, ids, cluster, content, item_hashes = workspace.load_arrays(clean_folder, "clean", "key", "y", "ids",
                                                                        "cluster", "content", "sha256")
    predefined = config.split.strategy == "predefined"
    stratify = y if config.split.strategy in ("stratified", "predefined") and dataset["task"] == "classification" \
        else None
    grouping = splits.group_ids(content.tolist(), cluster)
    barred = splits.barred_items(content.tolist(), used)
    if predefined:  # the folder's own train/ (val/) test/ sub-folders; near-duplicates across them still stop
        parts = splits.predefined(splits.given_split(clean_folder), stratify, grouping, config.split, barred, ids)
    else:
        splits.check_strata(stratify, ids, dataset["class_names"])
        parts = splits.assign(stratify, grouping, None, config.split, barred, ids)
        splits.check_ratios(parts, grouping, ids, config.split)
    for name in splits.SPLITS:
        workspace.save_arrays(folder, name, keys=keys[parts[name]], y=y[parts[name]], ids=ids[parts[name]])
    # clean's shards, from here; a relative path, so the project can move
    dataset["shards"] = os.path.relpath(clean_folder / "shards", folder)
    opened = shards.open_shards(clean_folder / "shards")
    dataset["input_shape"] = list(opened.shape)
    statistics = splits.normalizer(shards.Items(opened, keys[parts["train"]]), config.normalize, per_feature=False)
    return Assignment(parts, ids, y, item_hashes.tolist(), grouping, stratify, content=content.tolist(),
                      cluster=cluster), statistics


BASELINE = "logistic"


def features(x) -> np.ndarray:
    """16x16 grey thumbnails, flattened (what analyze's baseline sees), built chunk by chunk from the reader."""
    import tensorflow as tf

    out = np.empty((len(x), 256), np.float32)
    for positions, items in x.chunks(1024):
        grey = items.astype(np.float32).mean(axis=-1, keepdims=True)
        out[positions] = tf.image.resize(grey, (16, 16), method="area").numpy().reshape(len(items), -1)
    return out


def preprocessing(dataset: dict, split_folder: Path) -> dict:
    height, width, channels = dataset["input_shape"]
    return {"kind": "image", "color_mode": "L" if channels == 1 else "RGB", "size": [height, width],
            "resample": "bicubic", "value_range": [0, 255]}
