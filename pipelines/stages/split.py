"""split: train/val/test without leakage, a manifest with content hashes, and the train-only preprocessing.

Strategies: stratified (classification) or random, seeded; temporal (the latest items go to test). Items that
share content (exact duplicates), near-duplicate images (clusters found by clean), recordings and, when asked,
rows of one `data.group_column` group always land in one split: the data kind's adapter
(pipelines/data/kinds/) decides the groups, writes each split's inputs and fits its preprocessing and the
normalizer on the training split only. With `health.action` set, label issues are found over train+val with
cleanlab (pipelines/data/health.py) and, when asked, the confident suspects leave train and val. A leakage check
runs on every split and fails the stage naming the items. The same config gives a byte-identical `split_manifest.json`.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from pipelines.core import config as config_module
from pipelines.core import ledger, stage, tracking, workspace
from pipelines.data import health, kinds, splits


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Splits the cleaned data, checks for leakage, fits preprocessing and the normalizer on train."""
    clean_folder, _ = stage.upstream(config, "clean", "split")

    def body(folder: Path) -> dict:
        dataset = workspace.read_json(clean_folder / "dataset.json")
        used = ledger.used_keys() if config.split.exclude_used_from_test else set()
        assignment, statistics = kinds.get(dataset["kind"]).split(clean_folder, dataset, config, folder, used)
        checked = {}
        if config.health.action != "none":  # label issues over train+val, before the manifest records the parts
            workspace.write_json(folder / "dataset.json", dataset)
            assignment, checked = health.check(folder, assignment, dataset, config)
            for name in (health.ISSUES, health.DATA_ISSUES, "health.json", "health_suspects.png",
                         "health_outliers.png"):
                if (folder / name).is_file():
                    mlflow.log_artifact(str(folder / name), "health")
            tracking.log_metrics(health.class_metrics(workspace.read_json(folder / "health.json")))
        temporal = config.split.strategy == "temporal"
        fold_of = splits.fold_numbers(assignment.parts, assignment.stratify, assignment.grouping, config.split,
                                      assignment.times, assignment.streams) if config.split.folds else {}
        manifest = splits.manifest(assignment, fold_of, splits.FORWARD if temporal and fold_of else "")
        splits.check_leakage(manifest["items"], temporal=temporal)
        workspace.write_json(folder / splits.MANIFEST, manifest)
        workspace.write_json(folder / "normalizer.json", statistics)
        workspace.write_json(folder / "dataset.json", dataset)
        for name in (splits.MANIFEST, "normalizer.json", "dataset.json"):
            mlflow.log_artifact(str(folder / name))
        for log in sorted(folder.glob("*_log.csv")):  # the kind's logs of what split fitted and changed
            mlflow.log_artifact(str(log))
        metrics = {**{f"split/{name}_items": len(assignment.parts[name]) for name in splits.SPLITS}, **checked}
        if config.split.exclude_used_from_test:  # what the tracking store's test ledger held when this split ran
            metrics["split/used_test_items_held_out"] = len(set(assignment.content or []) & used)
        tracking.log_metrics(metrics)
        return metrics

    inputs = {"clean": stage.identity(clean_folder)}
    return stage.execute(config, "split", ("data", "split", "normalize", "health"), inputs, body, force)
