"""The tabular path end to end: breast_cancer (classification) and diabetes (regression), tiny configs."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

import deploy.edge.predict as edge
from deploy.edge.predict import LiteRTModel
from pipelines import __main__ as cli
from pipelines.core import workspace
from tests.conftest import REPO, TINY, png

TABLE = [*TINY, "model.architecture=mlp", "model.dense_units=16", "train.epochs=20", "train.patience=5"]


def _run(root, source, *extra):
    args = ["all"] + [item for override in [*TABLE, f"data.source={source}", f"experiment={source}",
                                            f"runtime.root={root}", *extra] for item in ("--set", override)]
    assert cli.main(args) == 0
    return workspace.read_json(workspace.stage_dir(root, source, "evaluate") / "test_report.json")


@pytest.mark.slow
def test_breast_cancer_trains_exports_and_predicts_on_the_edge_from_raw_rows(tmp_path):
    report = _run(tmp_path, "breast_cancer")
    assert report["results"]["keras"]["accuracy"] > 0.85
    assert abs(report["results"]["int8"]["accuracy"] - report["results"]["keras"]["accuracy"]) <= 0.05
    bundle = workspace.bundle_dir(tmp_path, "breast_cancer")
    split_folder = workspace.stage_dir(tmp_path, "breast_cancer", "split")
    x, ids = workspace.load_arrays(split_folder, "test", "x", "ids")
    raw = load_breast_cancer(as_frame=True).data
    rows = raw.iloc[[int(item.split("-")[1]) for item in ids[:15]]]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    labels = (bundle / "labels.txt").read_text().split()
    expected = [labels[index] for index in LiteRTModel(bundle / "model.tflite").predict(x[:15]).argmax(axis=1)]
    output = subprocess.run([sys.executable, "-m", "deploy.edge.predict", str(bundle), str(tmp_path / "rows.csv")],
                            capture_output=True, text=True, check=True).stdout
    assert [line.split("\t")[1] for line in output.splitlines()] == expected


@pytest.mark.slow
def test_diabetes_regression_reports_the_regression_metrics(tmp_path):
    report = _run(tmp_path, "diabetes", "split.strategy=random", "train.learning_rate=3e-3",
                  "export.max_mae_increase=0.5")
    for model in ("keras", "int8"):
        assert set(report["results"][model]) == {"mae", "mse", "rmse", "mape", "r2"}
        assert report["results"][model]["rmse"] == pytest.approx(np.sqrt(report["results"][model]["mse"]))
    assert report["results"]["keras"]["mae"] < 150  # target spans 25-346; an untrained net predicts about 0
    for name in ("residuals_keras.png", "residuals_int8.png"):
        png(workspace.stage_dir(tmp_path, "diabetes", "evaluate") / name, (495, 450))


@pytest.mark.slow
def test_breast_cancer_selects_on_recall_with_a_floor_and_its_bundle_applies_the_threshold(tmp_path):
    quick = ["train.epochs=40", "search.n_trials=1", "search.epochs=10", "export.representative_samples=32",
             "export.latency_runs=3", "runtime.verbose=0", f"runtime.root={tmp_path}"]
    assert cli.main(["all", "--config", str(REPO / "configs" / "breast_cancer.yaml"),
                     *[item for setting in quick for item in ("--set", setting)]]) == 0
    bundle = workspace.bundle_dir(tmp_path, "breast_cancer")
    metadata = workspace.read_json(bundle / "metadata.json")
    assert metadata["positive_class"] == "malignant" and metadata["positive_index"] == 0
    assert metadata["objective"] == "recall" and metadata["floors"] == {"specificity": 0.9}
    threshold = metadata["decision_threshold"]
    assert 0.0 < threshold < 1.0 and metadata["floors_met"]
    # the threshold met its floor on validation, on the bundled model's own outputs
    split_folder = workspace.stage_dir(tmp_path, "breast_cancer", "split")
    x_val, y_val = workspace.load_arrays(split_folder, "val", "x", "y")
    val = LiteRTModel(bundle / "model.tflite").predict(x_val)
    decided = edge.decide(val, threshold, 0)
    assert ((decided == 1) & (y_val == 1)).sum() / (y_val == 1).sum() >= 0.85  # specificity of malignant: benign kept
    # evaluate decides as the bundle does, and says so
    report = workspace.read_json(workspace.stage_dir(tmp_path, "breast_cancer", "evaluate") / "test_report.json")
    assert report["decision"]["decision_threshold"] == threshold
    x, y, ids = workspace.load_arrays(split_folder, "test", "x", "y", "ids")
    outputs = LiteRTModel(bundle / "model.tflite").predict(x)
    chosen = report["record"]["tflite_variant"]
    assert report["results"][chosen]["accuracy"] == pytest.approx((edge.decide(outputs, threshold, 0) == y).mean())
    # raw rows through the bundle's predictor: the threshold's decisions, not argmax
    raw = load_breast_cancer(as_frame=True).data
    raw.iloc[[int(item.split("-")[1]) for item in ids]].to_csv(tmp_path / "rows.csv", index=False)
    labels = (bundle / "labels.txt").read_text().split()
    output = subprocess.run([sys.executable, "-m", "deploy.edge.predict", str(bundle), str(tmp_path / "rows.csv")],
                            capture_output=True, text=True, check=True).stdout
    expected = [labels[index] for index in edge.decide(outputs, threshold, 0)]
    assert [line.split("\t")[1] for line in output.splitlines()] == expected
