"""anomaly: a convolutional autoencoder on normal sensor windows; its reconstruction error flags anomalies.

It trains on the training split's normal windows only (early-stopped on the normal validation windows), picks
the threshold on validation (see pipelines/training/anomaly.py), converts the autoencoder to int8 TF-Lite
(calibrated on normal training windows), checks it on LiteRT and TFLite Micro, and scores the test split once:
precision, recall, F1, ROC-AUC and PR-AUC for the Keras model and the int8 model on LiteRT. The int8 model
outputs the reconstruction; the device computes the score in float from it and the normalized window (an
int8 score saturates: its range is calibrated on normal windows). The bundle holds the model, the threshold
and the normalizer. `make pipeline` runs analyze, clean, split and this stage for `model.architecture:
autoencoder1d`.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np

import deploy.edge.predict as edge
from deploy import micro, tflite
from pipelines.core import config as config_module
from pipelines.core import figures, ledger, stage, tracking, workspace
from pipelines.core.errors import StageError
from pipelines.data import splits
from pipelines.training import anomaly


def _histogram(window_scores: np.ndarray, labels: np.ndarray, cut: float, path: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 3.5))
    bins = np.geomspace(max(window_scores.min(), 1e-6), window_scores.max() * 1.01, 60)
    for value, name in ((0, "normal"), (1, "anomalous")):
        if (labels == value).any():
            axis.hist(window_scores[labels == value], bins=bins, alpha=0.6, label=f"{name} ({(labels == value).sum()})")
    axis.axvline(cut, color="black", linestyle="--", label=f"threshold {cut:.3g}")
    axis.set(xscale="log", xlabel="reconstruction error (normalized units)", ylabel="test windows",
             title="Anomaly scores of the test windows (int8 on LiteRT, the bundled model)")
    axis.legend()
    figures.save(figure, path)


def run(config: config_module.Config, force: bool = False, reuse_test: bool = False) -> stage.StageResult:
    """Trains the autoencoder, sets the threshold on val, exports int8, evaluates the test split once (the
    test ledger refuses a second use unless `reuse_test`)."""
    split_folder, _ = stage.upstream(config, "split", "anomaly")
    manifest_sha = splits.identity(split_folder)
    fixed = {"metrics": ["precision", "recall", "f1", "roc_auc", "pr_auc"], "threshold": "validation",
             "percentile": config.train.anomaly_percentile}
    dataset = workspace.read_json(split_folder / "dataset.json")
    if dataset["task"] != "anomaly":
        raise StageError(f"the anomaly stage needs an anomaly-detection source; '{config.data.source}' is "
                         f"{dataset['task']} (use model.architecture cnn1d or recurrent and make train)")

    def body(folder: Path) -> dict:
        data = splits.load_split(split_folder, ("train", "val", "test"))
        x, y = data.x, data.y
        model, history = anomaly.fit(config, x["train"][y["train"] == 0], x["val"][y["val"] == 0], data.normalizer)
        representative = x["train"][y["train"] == 0][: config.export.representative_samples]
        flatbuffer = tflite.convert(model, "int8", representative)
        workspace.write_bytes(folder / "int8.tflite", flatbuffer)
        lite = edge.LiteRTModel(flatbuffer)
        predict = {"keras": lambda windows: model.predict(windows, verbose=0), "int8": lite.predict}
        # each model's own threshold, on its own validation scores: int8's reconstruction error has a floor
        # of its own (quantization), so the float threshold would flag every window
        cuts = {name: anomaly.threshold(anomaly.scores(call(x["val"]), x["val"], data.normalizer), y["val"],
                                        config.train.anomaly_percentile) for name, call in predict.items()}
        test = {name: anomaly.scores(call(x["test"]), x["test"], data.normalizer) for name, call in predict.items()}
        results = {name: {**anomaly.report(y["test"], values, cuts[name][0]), "threshold": cuts[name][0]}
                   for name, values in test.items()}
        cut, method = cuts["int8"]  # the bundle's
        tensors = np.stack([lite.quantize(item)[0] for item in x["test"][: config.export.micro_samples]])
        try:
            _, arena = micro.tflm_run(flatbuffer, tensors)
            device = {"tflm_arena_bytes": arena}
        except micro.Unsupported as error:
            device = {"tflm_error": str(error)}
        _histogram(test["int8"], y["test"], cut, folder / "test_scores.png")
        workspace.write_json(folder / "anomaly_report.json", {
            "threshold": cut, "threshold_method": method, "epochs": len(history["loss"]), "results": results,
            "int8_size_bytes": len(flatbuffer), **device})
        bundle = workspace.bundle_dir(config.root, config.experiment)
        with workspace.staging(bundle) as staged:
            workspace.write_bytes(staged / "model.tflite", flatbuffer)
            workspace.write_json(staged / "metadata.json", {
                "task": "anomaly", "threshold": cut, "threshold_method": method,
                "score": "mean squared error between the model's output and the normalized window",
                "normalization": data.normalizer, "input": {"shape": [1, *x["train"].shape[1:]]},
                "preprocessing": {"kind": "signal", **{key: dataset[key] for key in
                                                       ("channels", "sampling_rate_hz", "window", "stride")}}})
        uses = ledger.previous_uses(config, manifest_sha)
        ledger.record(config, manifest_sha, {"run_id": mlflow.active_run().info.run_id, "stage": "anomaly",
                                             "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "procedure": fixed,
                                             "reused": bool(uses)})
        mlflow.set_tags({"test_reused": str(bool(uses)).lower(), "test_uses": str(len(uses) + 1)})
        mlflow.log_artifacts(str(folder), "anomaly")
        metrics = {"anomaly/threshold": cut, "anomaly/epochs": len(history["loss"]),
                   "anomaly/int8_size_bytes": len(flatbuffer), **{f"anomaly/{key}": value for key, value in
                                                                 device.items() if key != "tflm_error"}}
        for name, row in results.items():
            prefix = "test" if name == "keras" else f"test/{name}"
            metrics.update({f"{prefix}/{key}": value for key, value in row.items() if np.isfinite(value)})
        tracking.log_metrics(metrics)
        return metrics

    inputs = {"split": manifest_sha}
    return stage.execute(config, "anomaly", ("model", "train", "export"), inputs, body, force,
                         guard=lambda: ledger.check_ledger(config, manifest_sha, reuse_test, fixed))
