"""evaluate: the test split, exactly once, hash-checked against the split manifest.

The registry's champion and the exported TF-Lite variant are evaluated side by side. The use is recorded in
`test_ledger.json` next to the split folder and in MLflow; a second evaluation of the same test split is
refused unless `--reuse-test`, which tags the run `test_reused=true` and counts the uses.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
from sklearn import metrics as sk_metrics

import deploy.edge.predict as edge
from pipelines import config as config_module
from pipelines import split, stage, tracking, workspace


class TestSetUsed(RuntimeError):
    """The test split was already evaluated and reuse was not asked for."""


def ledger_path(config: config_module.Config) -> Path:
    return workspace.stage_dir(config.root, config.experiment, "split").parent / "test_ledger.json"


def previous_uses(config: config_module.Config, manifest_sha: str) -> list[dict]:
    path = ledger_path(config)
    return workspace.read_json(path).get(manifest_sha, []) if path.is_file() else []


def check_ledger(config: config_module.Config, manifest_sha: str, reuse_test: bool) -> None:
    uses = previous_uses(config, manifest_sha)
    if uses and not reuse_test:
        last = uses[-1]
        raise TestSetUsed(
            f"the test split (manifest sha256 {manifest_sha[:12]}) was already evaluated on {last['time']} by "
            f"MLflow run {last['run_id']} ({len(uses)} use(s)); the test set is used once. "
            "Pass --reuse-test to evaluate again, tagged test_reused=true.")


def verify_test_items(split_folder: Path, x: np.ndarray, ids: np.ndarray) -> None:
    """Every test item's content hash must match the split manifest.

    Raises:
        ValueError: naming the items whose content changed, or that are missing or unexpected.
    """
    manifest = workspace.read_json(split_folder / split.MANIFEST)
    expected = {item["id"]: item["sha256"] for item in manifest["items"] if item["split"] == "test"}
    actual = {str(item_id): split.item_hash(image) for item_id, image in zip(ids, x)}
    changed = sorted(item for item in actual if item in expected and actual[item] != expected[item])
    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    if changed or missing or extra:
        raise ValueError(f"{split_folder}: test split does not match {split.MANIFEST}: changed {changed[:10]}, "
                         f"missing {missing[:10]}, unexpected {extra[:10]}; evaluation stopped")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=range(len(class_names)), zero_division=0)
    return {
        "accuracy": float(sk_metrics.accuracy_score(y_true, y_pred)),
        "macro_precision": float(precision.mean()), "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for name, p, r, f, s in zip(class_names, precision, recall, f1, support)},
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MAE, MSE, RMSE, MAPE (in percent) and R^2."""
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    mse = float(sk_metrics.mean_squared_error(y_true, y_pred))
    return {"mae": float(sk_metrics.mean_absolute_error(y_true, y_pred)), "mse": mse, "rmse": float(np.sqrt(mse)),
            "mape": float(100.0 * sk_metrics.mean_absolute_percentage_error(y_true, y_pred)),
            "r2": float(sk_metrics.r2_score(y_true, y_pred))}


def _residual_plot(y_true, y_pred, path: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(5.5, 4))
    axis.scatter(y_pred, y_true - y_pred, s=10)
    axis.axhline(0, color="grey", linestyle="--")
    axis.set(xlabel="predicted", ylabel="true - predicted", title=title)
    figure.tight_layout()
    with workspace.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


def _confusion_plot(y_true, y_pred, class_names, path: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(5.5, 5))
    sk_metrics.ConfusionMatrixDisplay.from_predictions(y_true, y_pred, display_labels=class_names, ax=axis,
                                                       colorbar=False)
    axis.set_title(title)
    figure.tight_layout()
    with workspace.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


def _report(results: dict, uses: int) -> str:
    columns = [key for key, value in next(iter(results.values())).items() if isinstance(value, float)]
    lines = ["# Test evaluation", "", f"Uses of this test split, this one included: {uses}", "",
             "| model | " + " | ".join(column.replace("_", " ") for column in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[column]:.4f}" for column in columns) + " |")
    return "\n".join(lines) + "\n"


def run(config: config_module.Config, force: bool = False, reuse_test: bool = False) -> stage.StageResult:
    """Evaluates the champion and the exported TF-Lite variant on the test split, once."""
    split_folder, _ = stage.upstream(config, "split", "evaluate")
    export_folder, _ = stage.upstream(config, "export", "evaluate")
    manifest_sha = workspace.sha256_file(split_folder / split.MANIFEST)
    variant = config.evaluate.tflite_variant

    def body(folder: Path) -> dict:
        x, y, ids = workspace.load_arrays(split_folder, "test", "x", "y", "ids")
        verify_test_items(split_folder, x, ids)
        dataset = workspace.read_json(split_folder / "dataset.json")
        class_names, classification = dataset["class_names"], dataset["task"] == "classification"
        model = tracking.load_champion(config)
        outputs = {"keras": model.predict(x.astype(np.float32), verbose=0),
                   variant: edge.LiteRTModel(export_folder / f"{variant}.tflite").predict(x)}
        if classification:
            predictions = {name: output.argmax(axis=1) for name, output in outputs.items()}
            results = {name: classification_metrics(y, predicted, class_names)
                       for name, predicted in predictions.items()}
        else:
            predictions = {name: output[:, 0] for name, output in outputs.items()}
            results = {name: regression_metrics(y, predicted) for name, predicted in predictions.items()}
        uses = previous_uses(config, manifest_sha)
        record = {"run_id": mlflow.active_run().info.run_id, "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                  "reused": bool(uses), "champion_version": tracking.champion_version(config)}
        mlflow.set_tags({"test_reused": str(bool(uses)).lower(), "test_uses": str(len(uses) + 1)})
        for name, predicted in predictions.items():
            if classification:
                _confusion_plot(y, predicted, class_names, folder / f"confusion_{name}.png", f"Test confusion: {name}")
            else:
                _residual_plot(y, predicted, folder / f"residuals_{name}.png", f"Test residuals: {name}")
        workspace.write_json(folder / "test_report.json", {"manifest_sha256": manifest_sha, "uses": len(uses) + 1,
                                                           "record": record, "results": results})
        workspace.write_text(folder / "test_report.md", _report(results, len(uses) + 1))
        mlflow.log_artifacts(str(folder), "evaluation")
        ledger = workspace.read_json(ledger_path(config)) if ledger_path(config).is_file() else {}
        ledger.setdefault(manifest_sha, []).append(record)
        workspace.write_json(ledger_path(config), ledger)
        metrics = {"test/uses": len(uses) + 1}
        for name, row in results.items():
            prefix = "test" if name == "keras" else f"test/{name}"
            metrics.update({f"{prefix}/{key}": value for key, value in row.items() if isinstance(value, float)})
        tracking.log_metrics(metrics)
        return metrics

    inputs = {"split": manifest_sha, "export": stage.manifest_digest(export_folder)}
    return stage.execute(config, "evaluate", ("evaluate",), inputs, body, force,
                         guard=lambda: check_ledger(config, manifest_sha, reuse_test))
