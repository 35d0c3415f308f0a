"""evaluate: the test split, exactly once, hash-checked against the split manifest.

The registry's champion and the TF-Lite variant chosen for the device are evaluated side by side with a
procedure fixed in the config (metrics, bootstrap resamples, confidence). The use is recorded in the tracking
store's test ledger (`pipelines/core/ledger.py`), keyed by the content of the test items: an evaluation of a
test split that shares items with any earlier one (under any seed or experiment name, after `make clean`) is
refused unless `--reuse-test`, which tags the run `test_reused=true` and counts the uses, and even then the
procedure must be the one of the first evaluation.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

import deploy.edge.predict as edge
from pipelines.core import config as config_module
from pipelines.core import ledger, stage, tracking, workspace
from pipelines.core.errors import StageError
from pipelines.data import splits
from pipelines.training import evaluation


def run(config: config_module.Config, force: bool = False, reuse_test: bool = False) -> stage.StageResult:
    """Evaluates the champion and the deployed TF-Lite variant on the test split, once."""
    split_folder, _ = stage.upstream(config, "split", "evaluate")
    export_folder, export_manifest = stage.upstream(config, "export", "evaluate")
    bundle = workspace.bundle_dir(config.root, config.experiment) / "model.tflite"
    # The Keras model scored beside the TF-Lite variant is the version that export converted, never another.
    version = export_manifest["metrics"]["champion_version"]
    manifest_sha = splits.identity(split_folder)
    keys = ledger.test_keys(split_folder)
    dataset = workspace.read_json(split_folder / "dataset.json")
    fixed = evaluation.procedure(config, dataset["task"])
    variant = config.evaluate.tflite_variant
    table = workspace.read_json(export_folder / "export_table.json")
    if variant == "bundle":
        variant = table["chosen"]
    # an anomaly detector flags a window at the threshold export chose for each model on validation
    thresholds = {"keras": table.get("keras", {}).get("threshold"),
                  variant: table["variants"][variant].get("threshold")}
    task = dataset["task"]
    # a binary classifier decides at the threshold chosen on validation, as the bundle's predictor does
    shipped = workspace.read_json(bundle.parent / "metadata.json") if (bundle.parent / "metadata.json").is_file() \
        else {}
    decision = (shipped["decision_threshold"], shipped["positive_index"]) if "decision_threshold" in shipped else None

    found: dict = {}  # the ledger's earlier uses of these test items, read by the guard before the body runs

    def body(folder: Path) -> dict:
        y, ids = workspace.load_arrays(split_folder, "test", "y", "ids")
        hashes = [""] * len(y)

        def hash_items(positions, items):
            for position, item in zip(positions, items):
                hashes[position] = splits.item_hash(item, y[position].item())

        items = splits.split_items(split_folder, "test")
        outputs = splits.predict({"keras": tracking.load_champion(config, version),
                                  variant: edge.LiteRTModel(export_folder / f"{variant}.tflite")}, items, hash_items)
        evaluation.verify_test_items(split_folder, hashes, y, ids)
        normalizer = workspace.read_json(split_folder / "normalizer.json") if task == "anomaly" else None
        outputs, results, intervals = evaluation.scored(task, y, outputs, items, dataset, normalizer, thresholds,
                                                        decision, fixed)
        reference = evaluation.baseline(config, split_folder, dataset, items, y, fixed) if task != "anomaly" else None
        sliced = evaluation.slices(splits.slice_values(split_folder, "test"), dataset, y, outputs, fixed, decision) \
            if task != "anomaly" else None
        # a sensor classifier, per recording too: the vote of its windows, as the edge predictor decides
        recordings = evaluation.per_recording(y, outputs, ids, dataset.get("recording_vote", "mean"), decision,
                                              fixed) if task == "classification" and dataset["kind"] == "signals" \
            else None
        if recordings:
            workspace.write_text(folder / "recordings.csv", evaluation.recording_csv(recordings,
                                                                                     dataset["class_names"]))
        if task == "anomaly":
            evaluation.histograms(y, outputs, results, folder)
        else:
            names = dataset["class_names"] if task == "classification" else []
            evaluation.plots(y, outputs, results, names, folder, decision)
        uses = found["uses"]  # read once, by the guard
        record = {"evaluate_run_id": mlflow.active_run().info.run_id, "experiment": config.experiment,
                  "manifest_sha256": manifest_sha, "reused": str(bool(uses)).lower(),
                  "champion_version": version, "procedure": fixed, "tflite_variant": variant}
        mlflow.set_tags({"test_reused": str(bool(uses)).lower(), "test_uses": str(len(uses) + 1),
                         "evaluate.tflite_variant": variant, "champion_version": version})
        workspace.write_json(folder / "test_report.json", {
            "manifest_sha256": manifest_sha, "uses": len(uses) + 1, "record": record, "procedure": fixed,
            "earlier_uses": uses, "results": results, "intervals": intervals, "baseline": reference, "slices": sliced,
            "recordings": {key: value for key, value in recordings.items() if key not in ("ids", "labels",
                                                                                          "predicted")}
            if recordings else None,
            "decision": {key: shipped[key] for key in ("decision_threshold", "positive_class", "objective", "floors")
                         if key in shipped}})
        text = evaluation.report(results, intervals, fixed, uses, task, reference) + evaluation.slice_text(sliced) \
            + evaluation.recording_text(recordings)
        workspace.write_text(folder / "test_report.md", text)
        mlflow.log_artifacts(str(folder), "evaluation")
        ledger.record(keys, record)
        flat = {"test/uses": len(uses) + 1, **evaluation.flat_metrics(results, intervals)}
        for name, row in (recordings or {}).get("models", {}).items():
            prefix = "test" if name == "keras" else f"test/{name}"
            flat.update({f"{prefix}/recording_accuracy": row["recording_accuracy"],
                         f"{prefix}/recording_accuracy_ci_low": row["recording_interval"][0],
                         f"{prefix}/recording_accuracy_ci_high": row["recording_interval"][1]})
        if reference:
            flat.update(evaluation.flat_metrics({"baseline": reference["results"]},
                                                {"baseline": reference["intervals"]}))
        tracking.log_metrics(flat)
        return flat

    def guard() -> None:
        champion = tracking.champion_version(config)
        if champion != version:
            raise StageError(f"the edge bundle was exported from version {version} of '{config.experiment}', but "
                             f"the champion is now version {champion}; run export first (make export)")
        found["uses"] = ledger.earlier_uses(keys)
        ledger.check(found["uses"], len(keys), reuse_test, fixed)

    inputs = {"split": manifest_sha, "export": stage.identity(export_folder),
              "bundle": workspace.sha256_file(bundle) if bundle.is_file() else "missing",
              "champion": tracking.champion_version(config)}
    return stage.execute(config, "evaluate", ("evaluate",), inputs, body, force, guard=guard)
