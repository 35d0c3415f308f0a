"""analyze: what the raw data looks like before anything touches it.

Images: class balance (empty classes named), sizes, modes and channels with the files of every odd size and
mode, unreadable files, exact duplicates (content hash) and label conflicts; near-duplicates are clean's job
(it verifies and clusters them, once). Tables: dtypes, missing values (and the tokens read as missing),
ranges, outliers, constant and duplicate columns, high-cardinality categoricals, correlations, declared-range
violations and inconsistencies between columns. Sensor signals: channel ranges, missing samples, flat and
clipped stretches, sampling jitter. Each kind's adapter (pipelines/data/kinds/) profiles its data and fits a
quick scikit-learn baseline, so the user knows what a deep model has to beat: cross-validated with the split's
grouping and time order, never on a test share held out by the split's rules (`splits.analysis_folds`). Writes
report.md, report.json and plots; logs them to MLflow.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import mlflow

from pipelines.core import config as config_module
from pipelines.core import figures, stage, tracking, workspace
from pipelines.data import kinds, sources


def _bar(values: dict, title: str, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(max(6, len(values) * 0.4), 3))
    axis.bar([str(key) for key in values], list(values.values()), color="tab:blue")
    axis.set(title=title)
    axis.tick_params(axis="x", rotation=45 if len(values) > 10 else 0)
    figures.save(figure, path)


def _markdown(report: dict) -> str:
    lines = [f"# Dataset analysis: {report['source']}", "", f"- kind: {report['kind']}, task: {report['task']}, "
             f"items: {report['items']}"]
    baseline = report["baseline"]
    lines.append(f"- baseline ({baseline['model']}, {baseline.get('evaluated_on', '')}): {baseline['metric']} "
                 f"{baseline['score_mean']:.4f} +/- {baseline['score_std']:.4f}")
    skip = {"source", "kind", "task", "items", "baseline"}
    for key, value in report.items():
        if key not in skip:
            text = str(value)
            lines.append(f"- {key.replace('_', ' ')}: {text[:600]}{' ...' if len(text) > 600 else ''}")
    return "\n".join(lines) + "\n"


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Profiles the raw data and fits a quick baseline; writes report.{md,json} and plots."""

    def body(folder: Path) -> dict:
        kind = kinds.for_source(config.data.source)
        report, headline = kind.profile(kind.read(config), config, folder)
        if "class_counts" in report:
            _bar(report["class_counts"], "Items per class", folder / "class_counts.png")
        workspace.write_json(folder / "report.json", report)
        workspace.write_text(folder / "report.md", _markdown(report))
        mlflow.log_artifacts(str(folder), "analysis")
        metrics = {"analyze/items": report["items"], "analyze/baseline_score": report["baseline"]["score_mean"]}
        if "imbalance_ratio" in report:
            metrics["analyze/imbalance_ratio"] = report["imbalance_ratio"]
        if "label_health" in report:
            metrics["analyze/label_issues"] = report["label_health"]["label_issues"]
            metrics["analyze/outliers"] = report["label_health"]["outliers"]
            metrics["analyze/near_duplicates"] = report["label_health"]["near_duplicates"]
        metrics.update(headline)
        tracking.log_metrics(metrics)
        return metrics

    inputs = {"source": sources.fingerprint(config.data, config.root)}
    return stage.execute(config, "analyze", ("data", "split.seed", "health"), inputs, body, force)
