"""The tabular path end to end: breast_cancer (classification) and diabetes (regression), tiny configs."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from deploy.edge.predict import LiteRTModel
from pipelines import __main__ as cli
from pipelines.core import workspace
from tests.conftest import TINY, png

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
