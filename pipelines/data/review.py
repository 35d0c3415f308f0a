"""The review loop: a reviewer's decisions (`data.relabel`, `data.exclude`) applied by clean to the raw items.

A decision file is a CSV with a header: `id,label` (relabel: the class name, or the value for regression) or
`id,reason` (exclude). Clean applies them before its own rules, so a relabelled image takes part in the
duplicate and conflict rules with its new label, and lists every decision in its cleaning log with the file and
line it came from. An id the data does not have, a label that is not a class, or an item of a test split that
the test ledger records as evaluated is refused, naming the file and line: a used test set stays as it was
measured.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.core.errors import DataError


@dataclasses.dataclass(frozen=True)
class Decision:
    item: str  # the item's id, as the cleaning log and the split manifest name it
    value: str  # the new label (relabel) or the reason (exclude)
    origin: str  # "<file>:<line>"


def read(path: Path, column: str) -> list[Decision]:
    """The decisions of one file, in file order.

    Raises:
        DataError: the file is missing or unreadable, has no `id` or `column` column, or names an id twice.
    """
    if not path.is_file():
        raise DataError(f"{path}: decision file not found")
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            if not reader.fieldnames or {"id", column} - set(reader.fieldnames):
                raise DataError(f"{path}: needs the columns id and {column}, has {reader.fieldnames or []}")
            decisions, seen = [], {}
            for row in reader:
                line = reader.line_num
                item = (row.get("id") or "").strip()
                if not item:
                    raise DataError(f"{path}: line {line}: empty id")
                if item in seen:
                    raise DataError(f"{path}: line {line}: id '{item}' is already decided on line {seen[item]}")
                seen[item] = line
                decisions.append(Decision(item, (row.get(column) or "").strip(), f"{path.name}:{line}"))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; save it as UTF-8") from None
    return decisions


def _positions(decisions: list[Decision], ids: tuple[str, ...], path: Path) -> list[int]:
    where = {item: index for index, item in enumerate(ids)}
    for decision in decisions:
        if decision.item not in where:
            raise DataError(f"{path}: line {decision.origin.rsplit(':', 1)[1]}: id '{decision.item}' is not an "
                            f"item of the data (ids look like '{ids[0] if ids else '?'}')")
    return [where[decision.item] for decision in decisions]


def _label(decision: Decision, raw, path: Path):
    if raw.task == "regression":
        try:
            return float(decision.value)
        except ValueError:
            raise DataError(f"{path}: line {decision.origin.rsplit(':', 1)[1]}: label '{decision.value}' is not a "
                            "number (regression target)") from None
    if decision.value not in raw.class_names:
        raise DataError(f"{path}: line {decision.origin.rsplit(':', 1)[1]}: label '{decision.value}' is not a class "
                        f"({', '.join(raw.class_names)})")
    return raw.class_names.index(decision.value)


def _labels(raw) -> np.ndarray:
    if getattr(raw, "labels", None) is None and not hasattr(raw, "target"):
        raise DataError(f"{raw.origin}: data.relabel needs labelled items")
    return np.array(raw.target if hasattr(raw, "target") else raw.labels, copy=True)


def _with_labels(raw, labels: np.ndarray):
    if hasattr(raw, "target"):
        return dataclasses.replace(raw, target=pd.Series(labels, name=raw.target.name))
    return dataclasses.replace(raw, labels=labels)


def _subset(raw, keep: np.ndarray):
    """The raw items at positions `keep`, in order, whatever the kind."""
    ids = tuple(raw.ids[index] for index in keep)
    given_split = None if raw.given_split is None else np.asarray(raw.given_split)[keep]  # the dataset's own split
    if hasattr(raw, "features"):  # a table
        pick = lambda series: None if series is None else series.iloc[keep].reset_index(drop=True)  # noqa: E731
        return dataclasses.replace(raw, features=raw.features.iloc[keep].reset_index(drop=True),
                                   target=raw.target.iloc[keep].reset_index(drop=True), ids=ids,
                                   groups=pick(raw.groups), times=pick(raw.times), given_split=given_split)
    if hasattr(raw, "images"):
        problems = {position: raw.problems[index] for position, index in enumerate(keep) if index in raw.problems}
        return dataclasses.replace(raw, images=raw.images.subset(keep), labels=raw.labels[keep], ids=ids,
                                   problems=problems, given_split=given_split)
    listed = lambda values: None if values is None else [values[index] for index in keep]  # noqa: E731
    return dataclasses.replace(raw, signals=listed(raw.signals), ids=ids,
                               labels=None if raw.labels is None else raw.labels[keep],
                               sample_labels=listed(raw.sample_labels), times=listed(raw.times),
                               files=tuple(listed(raw.files)) if raw.files else raw.files,
                               given_split=None if given_split is None else tuple(given_split))


def used_test_ids(split_folder: Path) -> set[str]:
    """The ids of the test items of this experiment's last split that the test ledger records as evaluated, and
    the recordings their windows were cut from (a window's id is `<recording>@<start>`; its group, or its stream
    in a temporal split, the recording)."""
    if not (split_folder / "split_manifest.json").is_file():
        return set()
    from pipelines.core import ledger

    items = workspace.read_json(split_folder / "split_manifest.json")["items"]
    test = {item.get("content", item["sha256"]): item for item in items if item["split"] == "test"}
    used = set()
    for key in ledger.used_keys() & set(test):
        item = test[key]
        used.add(item["id"])
        recording = item.get("group", item.get("stream"))  # signals: grouped by recording, or cut in time
        if recording is not None and item["id"].startswith(f"{recording}@"):
            used.add(recording)
    return used


def apply(raw, data: config_module.DataConfig, root: Path, split_folder: Path) -> tuple[object, list, dict]:
    """Applies `data.relabel`, then `data.exclude`, to the raw items.

    Args:
        raw: what the kind's `read` returned.
        split_folder: this experiment's split stage folder: its test items, where the ledger has them, are
            never changed.

    Returns:
        (the raw items as decided, cleaning-log rows, counts `relabelled` and `excluded`).

    Raises:
        DataError: naming the file and line of an unknown id, a label that is not a class, or a used test item.
    """
    files = [(Path(root) / name, column, rule) for name, column, rule in
             ((data.relabel, "label", "data.relabel"), (data.exclude, "reason", "data.exclude")) if name]
    if not files:
        return raw, [], {}
    decided = {rule: (path, read(path, column)) for path, column, rule in files}
    used = used_test_ids(split_folder)
    for path, decisions in decided.values():
        _positions(decisions, raw.ids, path)
        for decision in decisions:
            if decision.item in used:
                raise DataError(f"{path}: line {decision.origin.rsplit(':', 1)[1]}: '{decision.item}' is a test item "
                                "the test ledger records as evaluated; a used test set is never relabelled or "
                                "reduced. Split again with split.exclude_used_from_test=true first")
    log, counts = [], {}
    if "data.relabel" in decided:
        path, decisions = decided["data.relabel"]
        labels = _labels(raw)
        names = raw.class_names if raw.task == "classification" else None
        changed = 0
        for position, decision in zip(_positions(decisions, raw.ids, path), decisions):
            new = _label(decision, raw, path)
            old = labels[position]
            shown = (lambda value: names[int(value)]) if names else (lambda value: f"{float(value):g}")
            if old != new:
                changed += 1
            labels[position] = new
            log.append((decision.item, "data.relabel", "changed" if old != new else "kept",
                        f"label {shown(old)} -> {shown(new)} (reviewed in {decision.origin})"))
        raw, counts["relabelled"] = _with_labels(raw, labels), changed
    if "data.exclude" in decided:
        path, decisions = decided["data.exclude"]
        gone = set(_positions(decisions, raw.ids, path))
        for decision in decisions:
            log.append((decision.item, "data.exclude", "dropped",
                        f"{decision.value or 'no reason given'} (reviewed in {decision.origin})"))
        raw = _subset(raw, np.array([index for index in range(len(raw.ids)) if index not in gone], dtype=np.int64))
        counts["excluded"] = len(gone)
    return raw, log, counts


def fingerprint(data: config_module.DataConfig, root: Path) -> str:
    """The bytes of the decision files, so that a new decision reruns clean."""
    import hashlib

    digest = hashlib.sha256()
    for name in (data.relabel, data.exclude):
        path = Path(root) / name
        digest.update(path.read_bytes() if name and path.is_file() else b"-")
    return digest.hexdigest()
