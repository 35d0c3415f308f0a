"""clean: raw -> canonical form, by the declarative rules of the config, with a cleaning log.

The data kind's adapter (pipelines/data/kinds/) does the work: images become uint8 squares of the configured
size and channel count in TFRecord shards, with unreadable files, exact duplicates and label conflicts dropped
and near-duplicates clustered; tables get the row-level rules (declared ranges, values derived from another
column, duplicate rows and conflicts, constant columns), while fitted imputation and encoding happen in split,
on the training split only; sensor recordings are cut into windows. Every dropped or changed item is listed in
`cleaning_log.csv` with the rule that did it: nothing vanishes silently. A reviewer's decisions (`data.relabel`,
`data.exclude`, pipelines/data/review.py) are applied first and logged with the file and line they came from.
Raw data is never modified.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from pipelines.core import config as config_module
from pipelines.core import stage, tracking, workspace
from pipelines.data import kinds, review, sources


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Applies the cleaning rules and writes the canonical data, `dataset.json` and `cleaning_log.csv`."""

    def body(folder: Path) -> dict:
        kind = kinds.for_source(config.data.source)
        split_folder = workspace.stage_dir(config.root, config.experiment, "split")
        raw, reviewed, decided = review.apply(kind.read(config), config.data, config.root, split_folder)
        log, counts, fields = kind.clean(raw, config, folder)
        log, counts = reviewed + log, {**counts, **decided}
        dataset = {"kind": kind.NAME, "task": raw.task, "class_names": list(raw.class_names), "origin": raw.origin,
                   **fields}
        workspace.write_json(folder / "dataset.json", dataset)
        workspace.write_text(folder / "cleaning_log.csv", workspace.csv_text(workspace.LOG_HEADER, log))
        mlflow.log_artifact(str(folder / "cleaning_log.csv"))
        metrics = {f"clean/{key}": value for key, value in counts.items()}
        tracking.log_metrics(metrics)
        return metrics

    inputs = {"source": sources.fingerprint(config.data, config.root)}
    if config.data.relabel or config.data.exclude:
        inputs["review"] = review.fingerprint(config.data, config.root)
    if config.split.file:  # the dataset's own split, when a file gives it
        path = Path(config.root) / config.split.file
        inputs["split_file"] = workspace.sha256_file(path) if path.is_file() else "missing"
    # the dataset's own split is read with the data (split.strategy: predefined)
    return stage.execute(config, "clean", ("data", "clean", "split.strategy", "split.column", "split.file"), inputs,
                         body, force)
