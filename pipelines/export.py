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
from pipelines import config as config_module
from pipelines import fitting, stage, tracking, workspace


def measure(classifier: edge.LiteRTClassifier, data: fitting.SplitData, keras_probabilities: np.ndarray,
            runs: int) -> dict:
    probabilities = classifier.probabilities(data.x["val"])
    predicted = probabilities.argmax(axis=1)
    sample = data.x["val"][0]
    for _ in range(5):
        classifier.invoke(sample)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        classifier.invoke(sample)
        timings.append((time.perf_counter() - started) * 1000.0)
    return {
        "val_accuracy": float((predicted == data.y["val"]).mean()),
        "agreement": float((predicted == keras_probabilities.argmax(axis=1)).mean()),
        "max_score_diff": float(np.abs(probabilities - keras_probabilities).max()),
        "latency_ms_median": float(np.median(timings)),
        "latency_ms_p90": float(np.percentile(timings, 90)),
    }


def choose(table: dict, keras_accuracy: float, max_drop: float) -> str:
    """The smallest variant whose val accuracy is within `max_drop` of the Keras model's."""
    eligible = [name for name, row in table.items() if keras_accuracy - row["val_accuracy"] <= max_drop + 1e-12]
    if not eligible:
        raise RuntimeError(f"no TF-Lite variant within export.max_accuracy_drop={max_drop} of the Keras "
                           f"model's val accuracy {keras_accuracy:.4f}: " + ", ".join(
                               f"{name} {row['val_accuracy']:.4f}" for name, row in table.items()))
    return min(eligible, key=lambda name: table[name]["size_bytes"])


def _table_text(table: dict) -> str:
    header = "| variant | size bytes | gzip bytes | val accuracy | agreement | max score diff | median ms | p90 ms |"
    lines = [header, "|" + "---|" * 8]
    for name, row in table.items():
        lines.append(f"| {name} | {row['size_bytes']} | {row['gzip_bytes']} | {row['val_accuracy']:.4f} | "
                     f"{row['agreement']:.4f} | {row['max_score_diff']:.4f} | {row['latency_ms_median']:.3f} | "
                     f"{row['latency_ms_p90']:.3f} |")
    return "\n".join(lines)


def _metadata(classifier: edge.LiteRTClassifier, data: fitting.SplitData, variant: str, row: dict,
              config: config_module.Config) -> dict:
    scale, zero_point = classifier.input["quantization"]
    return {
        "variant": variant,
        "input": {"shape": [int(v) for v in classifier.input["shape"]], "dtype": classifier.input["dtype"].__name__,
                  "scale": float(scale), "zero_point": int(zero_point)},
        "output": {"dtype": classifier.output["dtype"].__name__,
                   "scale": float(classifier.output["quantization"][0]),
                   "zero_point": int(classifier.output["quantization"][1])},
        "preprocessing": {"color_mode": "L", "size": list(data.x["val"].shape[1:3]), "resample": "bicubic",
                          "value_range": [0, 255]},
        "normalization": {"inside_model": True, "mean": data.mean, "variance": data.variance},
        "class_names": data.class_names,
        "source": {"experiment": config.experiment, "registered_model": f"{config.experiment}@champion",
                   "version": tracking.champion_version(config)},
        "metrics": row,
    }


def run(config: config_module.Config, force: bool = False) -> stage.StageResult:
    """Converts the champion to each variant, validates them on LiteRT and writes the bundle."""
    split_folder, _ = stage.upstream(config, "split", "export")
    tune_folder, _ = stage.upstream(config, "tune", "export")
    bundle = workspace.bundle_dir(config.root, config.experiment)

    def body(folder: Path) -> dict:
        model = tracking.load_champion(config)
        data = fitting.load_split(split_folder)
        keras_probabilities = model.predict(data.x["val"].astype(np.float32), verbose=0)
        keras_accuracy = float((keras_probabilities.argmax(axis=1) == data.y["val"]).mean())
        representative = data.x["train"][: config.export.representative_samples]
        table = {}
        for variant in config.export.variants:
            flatbuffer = tflite.convert(model, variant, representative)
            workspace.write_bytes(folder / f"{variant}.tflite", flatbuffer)
            row = {"size_bytes": len(flatbuffer), "gzip_bytes": len(gzip.compress(flatbuffer, mtime=0))}
            row.update(measure(edge.LiteRTClassifier(flatbuffer), data, keras_probabilities,
                               config.export.latency_runs))
            table[variant] = row
        chosen = choose(table, keras_accuracy, config.export.max_accuracy_drop)
        classifier = edge.LiteRTClassifier(folder / f"{chosen}.tflite")
        workspace.write_json(folder / "export_table.json", {"keras_val_accuracy": keras_accuracy,
                                                            "variants": table, "chosen": chosen})
        text = f"Keras val accuracy {keras_accuracy:.4f}; bundled variant: {chosen}\n\n{_table_text(table)}\n"
        workspace.write_text(folder / "export_table.md", text)
        print(text)
        with workspace.staging(bundle) as staged:
            shutil.copyfile(folder / f"{chosen}.tflite", staged / "model.tflite")
            (staged / "labels.txt").write_text("\n".join(data.class_names) + "\n")
            workspace.write_json(staged / "metadata.json", _metadata(classifier, data, chosen, table[chosen], config))
            shutil.copyfile(edge.__file__, staged / "predict.py")
        mlflow.log_artifacts(str(bundle), "bundle")
        mlflow.log_artifact(str(folder / "export_table.md"))
        mlflow.set_tag("export.chosen_variant", chosen)
        metrics = {"export/keras/val_accuracy": keras_accuracy}
        for variant, row in table.items():
            metrics.update({f"export/{variant}/{key}": value for key, value in row.items()})
        tracking.log_metrics(metrics)
        return {**metrics, "chosen": chosen}

    inputs = {"split": stage.manifest_digest(split_folder), "tune": stage.manifest_digest(tune_folder)}
    return stage.execute(config, "export", ("export",), inputs, body, force,
                         still_valid=lambda manifest: (bundle / "model.tflite").is_file())
