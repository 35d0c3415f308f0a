"""export: the champion model to TF-Lite variants, each measured on the LiteRT interpreter; the edge bundle.

For each variant: size raw and gzipped, accuracy on validation and top-1 agreement with the Keras model,
the largest probability difference, and batch-1 latency (warm-up, then median and p90). The smallest
variant within `export.max_accuracy_drop` of the Keras model goes into `deploy/bundles/<experiment>/`.
"""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import mlflow
import numpy as np

import deploy.edge.predict as edge
from deploy import tflite
from pipelines.core import config as config_module
from pipelines.core import stage, tracking, workspace
from pipelines.core.errors import StageError
from pipelines.data import splits
from pipelines.training import fitting


def measure(model: edge.LiteRTModel, data: splits.SplitData, keras_outputs: np.ndarray, runs: int) -> dict:
    """Validation score, agreement with Keras and batch-1 latency of one TF-Lite variant on LiteRT."""
    outputs = model.predict(data.x["val"])
    row = {"max_score_diff": float(np.abs(outputs - keras_outputs).max())}
    if data.task == "classification":
        predicted = outputs.argmax(axis=1)
        row["val_accuracy"] = float((predicted == data.y["val"]).mean())
        row["agreement"] = float((predicted == keras_outputs.argmax(axis=1)).mean())
    else:
        row["val_mae"] = float(np.abs(outputs[:, 0] - data.y["val"]).mean())
    row.update(latency(model, data.x["val"][0], runs))
    return row


def latency(model: edge.LiteRTModel, sample: np.ndarray, runs: int) -> dict:
    """Batch-1 latency in ms after a warm-up: of the interpreter alone on a prepared input tensor (the model's
    latency), and end to end with the predictor's input quantization and output dequantization in Python."""
    tensor = model.quantize(sample)
    row = {}
    for name, call in (("latency", lambda: model.run(tensor)), ("end_to_end", lambda: model.invoke(sample))):
        for _ in range(5):
            call()
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            call()
            timings.append((time.perf_counter() - started) * 1000.0)
        row.update({f"{name}_ms_median": float(np.median(timings)),
                    f"{name}_ms_p90": float(np.percentile(timings, 90))})
    return row


def optimized(model, variant: str, data: splits.SplitData, config: config_module.Config):
    """(Keras model to convert, numeric notes) for a variant: pruned, clustered or QAT-trained when asked."""
    from deploy import optimize

    if variant not in ("qat_int8", "pruned_int8", "pqat_int8", "clustered_int8"):
        return model, {}
    reason = optimize.optimizable(model)
    if reason:
        print(f"[export] {variant}: {reason}; falls back to post-training int8")
        mlflow.set_tag(f"export.{variant}.fallback", reason)
        return model, {"fallback": 1}
    settings, loss = config.export, fitting.loss_for(config, data.task)
    rate = config.train.learning_rate
    x, y = data.x["train"], data.y["train"]
    if variant == "pruned_int8":
        pruned = optimize.prune(model, loss, x, y, settings.prune_sparsity, settings.optimize_epochs, rate)
        return pruned, {"sparsity": optimize.sparsity(pruned)}
    if variant == "pqat_int8":
        quantized = optimize.prune_preserving_quantization(model, loss, x, y, settings.prune_sparsity,
                                                           settings.optimize_epochs, rate)
        return quantized, {"sparsity": optimize.sparsity(quantized)}
    if variant == "clustered_int8":
        return optimize.cluster(model, loss, x, y, settings.clusters, settings.optimize_epochs, rate), {}
    return optimize.quantization_aware(model, loss, x, y, settings.optimize_epochs, rate), {}


def triage(model, data, representative, keras_outputs, table: dict, folder: Path, config) -> None:
    """QuantizationDebugger's worst layers, and an `int8_selective` variant that keeps them in float."""
    from deploy import triage as debugger

    errors = debugger.layer_errors(model, representative)
    worst = errors.head(config.export.triage_layers)
    print(f"[export] int8 triage: full int8 loses more than export.triage_drop={config.export.triage_drop}; "
          f"worst layers by RMSE/scale: {', '.join(worst['tensor_name'])}")
    with workspace.atomic_path(folder / "int8_triage.csv") as temporary:
        errors.to_csv(temporary, index=False)
    mlflow.log_artifact(str(folder / "int8_triage.csv"))
    flatbuffer = debugger.selective(model, representative, list(worst["tensor_name"]))
    workspace.write_bytes(folder / "int8_selective.tflite", flatbuffer)
    row = {"size_bytes": len(flatbuffer), "gzip_bytes": len(gzip.compress(flatbuffer, mtime=0))}
    row.update(measure(edge.LiteRTModel(flatbuffer), data, keras_outputs, config.export.latency_runs))
    table["int8_selective"] = row


def keras_score(data: splits.SplitData, outputs: np.ndarray) -> float:
    if data.task == "classification":
        return float((outputs.argmax(axis=1) == data.y["val"]).mean())
    return float(np.abs(outputs[:, 0] - data.y["val"]).mean())


def choose(table: dict, reference: float, settings: config_module.ExportConfig, task: str = "classification") -> str:
    """The smallest variant within the allowed loss: accuracy drop, or relative MAE increase for regression."""
    if task == "classification":
        losses = {name: reference - row["val_accuracy"] for name, row in table.items()}
        limit, what = settings.max_accuracy_drop, "export.max_accuracy_drop"
    else:
        losses = {name: (row["val_mae"] - reference) / max(reference, 1e-12) for name, row in table.items()}
        limit, what = settings.max_mae_increase, "export.max_mae_increase"
    eligible = [name for name, loss in losses.items() if loss <= limit + 1e-12]
    if not eligible:
        raise StageError(f"no TF-Lite variant within {what}={limit} of the Keras model's validation score "
                           f"{reference:.4f}: " + ", ".join(f"{name} loses {value:.4f}"
                                                            for name, value in losses.items()))
    return min(eligible, key=lambda name: table[name]["size_bytes"])


def _table_text(table: dict) -> str:
    columns = ["size_bytes", "gzip_bytes"]
    for row in table.values():
        columns += [key for key in row if key not in columns]
    lines = ["| variant | " + " | ".join(column.replace("_", " ") for column in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for name, row in table.items():
        cells = ["" if column not in row else str(row[column]) if isinstance(row[column], int) else
                 f"{row[column]:.4f}" for column in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _metadata(model: edge.LiteRTModel, data: splits.SplitData, variant: str, row: dict,
              config: config_module.Config, split_folder: Path, version: str) -> dict:
    scale, zero_point = model.input["quantization"]
    if data.dataset["kind"] == "images":
        preprocessing = {"kind": "image", "color_mode": "L" if data.x["val"].shape[-1] == 1 else "RGB",
                         "size": list(data.x["val"].shape[1:3]), "resample": "bicubic", "value_range": [0, 255]}
    else:
        preprocessing = {"kind": "table", "feature_names": data.dataset["feature_names"],
                         "columns": workspace.read_json(split_folder / "preprocessing.json")}
    return {
        "variant": variant, "task": data.task,
        "input": {"shape": [int(v) for v in model.input["shape"]], "dtype": model.input["dtype"].__name__,
                  "scale": float(scale), "zero_point": int(zero_point)},
        "output": {"dtype": model.output["dtype"].__name__, "scale": float(model.output["quantization"][0]),
                   "zero_point": int(model.output["quantization"][1])},
        "preprocessing": preprocessing,
        "normalization": {"inside_model": True, **data.normalizer},
        "class_names": data.class_names,
        "source": {"experiment": config.experiment, "registered_model": f"{config.experiment}@champion",
                   "version": version},
        "metrics": row,
    }


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Converts the champion to each variant, validates them on LiteRT and writes the bundle."""
    split_folder, _ = stage.upstream(config, "split", "export")
    bundle = workspace.bundle_dir(config.root, config.experiment)
    # The champion's version is an input: a new champion (train --force, tune) always reaches the bundle.
    version = tracking.champion_version(config)

    def body(folder: Path) -> dict:
        model = tracking.load_champion(config, version)
        data = splits.load_split(split_folder)
        keras_outputs = model.predict(data.x["val"].astype(np.float32), verbose=0)
        reference = keras_score(data, keras_outputs)
        representative = data.x["train"][: config.export.representative_samples]
        table = {}
        for variant in config.export.variants:
            source, notes = optimized(model, variant, data, config)
            flatbuffer = tflite.convert(source, "int8" if variant.endswith("_int8") else variant, representative)
            workspace.write_bytes(folder / f"{variant}.tflite", flatbuffer)
            row = {"size_bytes": len(flatbuffer), "gzip_bytes": len(gzip.compress(flatbuffer, mtime=0))}
            row.update(measure(edge.LiteRTModel(flatbuffer), data, keras_outputs, config.export.latency_runs))
            row.update(notes)
            table[variant] = row
        if "int8" in table and data.task == "classification" and \
                reference - table["int8"]["val_accuracy"] > config.export.triage_drop:
            triage(model, data, representative, keras_outputs, table, folder, config)
        chosen = choose(table, reference, config.export, data.task)
        score_name = fitting.objective(data.task).log_name
        workspace.write_json(folder / "export_table.json", {f"keras_{score_name}": reference, "variants": table,
                                                            "chosen": chosen})
        text = f"Keras {score_name} {reference:.4f}; bundled variant: {chosen}\n\n{_table_text(table)}\n"
        workspace.write_text(folder / "export_table.md", text)
        print(text)
        with workspace.staging(bundle) as staged:
            shutil.copyfile(folder / f"{chosen}.tflite", staged / "model.tflite")
            (staged / "labels.txt").write_text("\n".join(data.class_names or ["value"]) + "\n")
            metadata = _metadata(edge.LiteRTModel(folder / f"{chosen}.tflite"), data, chosen, table[chosen], config,
                                 split_folder, version)
            workspace.write_json(staged / "metadata.json", metadata)
            shutil.copyfile(edge.__file__, staged / "predict.py")
        mlflow.log_artifacts(str(bundle), "bundle")
        mlflow.log_artifact(str(folder / "export_table.md"))
        mlflow.set_tags({"export.chosen_variant": chosen, "champion_version": version})
        metrics = {f"export/keras/{score_name}": reference}
        for variant, row in table.items():
            metrics.update({f"export/{variant}/{key}": value for key, value in row.items()})
        tracking.log_metrics(metrics)
        return {**metrics, "chosen": chosen, "champion_version": version}

    inputs = {"split": stage.manifest_digest(split_folder), "champion": f"{config.experiment} version {version}"}
    return stage.execute(config, "export", ("export",), inputs, body, force,
                         still_valid=lambda manifest: (bundle / "model.tflite").is_file())
