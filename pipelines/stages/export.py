"""export: the champion model to TF-Lite variants, each measured on the LiteRT interpreter; the edge bundle.

For each variant: size raw and gzipped, accuracy on validation and top-1 agreement with the Keras model,
the largest probability difference, batch-1 latency (warm-up, then median and p90), multiply-accumulates and
parameters counted from the flatbuffer, and a run on TensorFlow Lite for Microcontrollers (the arena it
needed, agreement with LiteRT, or the operators it lacks). The smallest variant within
`export.max_accuracy_drop` of the Keras model goes into `deploy/bundles/<experiment>/`; for each device target
(`export.targets`), the smallest variant that also fits the target's flash and RAM and runs on its runtime goes
into `deploy/bundles/<experiment>/<target>/` (a C array for a microcontroller), and the fit table says why.
"""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import time
from pathlib import Path

import mlflow
import numpy as np

import deploy.edge.predict as edge
from deploy import micro, tflite
from pipelines.core import config as config_module
from pipelines.core import stage, tracking, workspace
from pipelines.core.errors import StageError
from pipelines.data import kinds, splits
from pipelines.training import champion, fitting, gates, metrics, objectives


def validation(data: splits.SplitData, outputs: np.ndarray, config: config_module.Config,
               reference: np.ndarray | None = None, decision: dict | None = None) -> dict:
    """A model's validation columns (pipelines/training/metrics.py: accuracy and agreement with the Keras model,
    decided at a binary model's threshold when it has one, MAE, or an anomaly detector's own threshold and F1)."""
    rule = (decision["decision_threshold"], decision["positive_index"]) if decision else None
    row = metrics.validation(data.task, data.y["val"], outputs, reference, data.x["val"], data.normalizer,
                             config.train.anomaly_percentile, rule)
    goal = config.train.objective
    if goal != "auto" and data.task in ("classification", "regression"):  # the project's metric, which chooses
        positive = objectives.positive_index(data.class_names, config.train.positive_class) if data.class_names else 1
        row[f"val_{goal}"] = objectives.score(goal, data.y["val"], outputs if data.task == "classification"
                                              else outputs[:, 0], rule[0] if rule else None, positive)
    return row


def selection_column(config: config_module.Config, data: splits.SplitData) -> str:
    """The validation column that chooses between variants: `val_<train.objective>` when named (a drop for a
    metric where higher is better, else a relative increase), else accuracy, MAE or a detector's F1."""
    if config.train.objective != "auto" and data.task in ("classification", "regression"):
        return f"val_{config.train.objective}"
    return metrics.selection_column(data.task, data.y["val"])


def measure(model: edge.LiteRTModel, data: splits.SplitData, keras_outputs: np.ndarray,
            config: config_module.Config, decision: dict | None = None) -> dict:
    """Validation scores, difference from Keras and batch-1 latency of one TF-Lite variant on LiteRT."""
    outputs = splits.predict({"lite": model}, data.x["val"])["lite"]
    row = {"max_score_diff": float(np.abs(outputs - keras_outputs).max())}
    row.update(validation(data, outputs, config, keras_outputs, decision))
    row.update(latency(model, data.x["val"].head(1)[0], config.export.latency_runs))
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
    view = fitting.training_view(data)  # what the model trained on
    x, y = fitting.fit_inputs(view.x["train"], view.y["train"], loss, data.num_outputs, 32, config.train.seed)
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


def triage(model, data, representative, keras_outputs, table: dict, folder: Path, config,
           decision: dict | None = None) -> None:
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
    row.update(measure(edge.LiteRTModel(flatbuffer), data, keras_outputs, config, decision))
    table["int8_selective"] = row


def incumbent(config: config_module.Config, bundle: Path, version: str, model, data: splits.SplitData,
              split_folder: Path) -> tuple[str, np.ndarray] | None:
    """The version bundled before this one and its outputs on this validation split (gate d), when there is one
    and it reads the same inputs: a table model encoded by another split's preprocessing cannot be scored here."""
    path = bundle / "metadata.json"
    if config.export.gate_max_drop is None or data.task == "anomaly" or not path.is_file():
        return None
    previous = str(workspace.read_json(path).get("source", {}).get("version"))
    if previous == str(version) or not tracking.version_exists(config, previous):
        return None
    tags = tracking.version_tags(config, previous) or {}
    older = tracking.load_champion(config, previous)
    if data.dataset["kind"] == "table" and tags.get(champion.SPLIT_TAG) != splits.identity(split_folder) or \
            tuple(older.input_shape[1:]) != tuple(model.input_shape[1:]):
        print(f"[export] gate: version {previous}, bundled before, reads other inputs (another input shape, or a "
              "table encoded by another split); not compared")
        return None
    return f"version {previous}, bundled before", splits.predict({"older": older}, data.x["val"])["older"]


def blessing(config: config_module.Config, data: splits.SplitData, outputs: np.ndarray, version: str,
             allow_unblessed: bool, decision: dict | None = None, split_folder: Path | None = None,
             previous: tuple[str, np.ndarray] | None = None) -> dict:
    """The gates' verdict on the Keras model's validation outputs (pipelines/training/gates.py), printed and
    tagged on the registered version (`blessed`).

    Raises:
        StageError: a gate failed and `allow_unblessed` is off, naming the check and its numbers.
    """
    kind = kinds.get(data.dataset["kind"])
    features = None if data.task == "anomaly" else {name: kind.features(data.x[name]) for name in ("train", "val")}
    rule = (decision["decision_threshold"], decision["positive_index"]) if decision else None
    values = splits.slice_values(split_folder, "val") if split_folder is not None else None
    slices = (data.dataset["slice_column"], values) if values is not None else None
    gate = gates.verdict(config, data, outputs, features, kind.BASELINE, rule, slices, previous)
    print(gates.text(gate))
    tracking.tag_version(config, version, {"blessed": str(gate["blessed"]).lower()})
    mlflow.set_tags({"blessed": str(gate["blessed"]).lower()})
    if not gate["blessed"] and not allow_unblessed:
        raise StageError(f"export: version {version} of '{config.experiment}' fails its gates on validation data "
                         f"({'; '.join(gate['failed'])}); nothing bundled. Improve the model, or bundle it anyway "
                         "with --allow-unblessed (tagged blessed: false)")
    return gate


def _losses(table: dict, reference: float, settings: config_module.ExportConfig, column: str):
    higher = metrics.HIGHER_IS_BETTER.get(column)
    if higher is None:  # a named train.objective
        higher = objectives.OBJECTIVES[column.removeprefix("val_")][1]
    if higher:
        losses = {name: reference - row[column] for name, row in table.items()}
        return losses, settings.max_accuracy_drop, "export.max_accuracy_drop"
    losses = {name: (row[column] - reference) / max(reference, 1e-12) for name, row in table.items()}
    return losses, settings.max_mae_increase, "export.max_mae_increase"


def choose(table: dict, reference: float, settings: config_module.ExportConfig, column: str = "val_accuracy") -> str:
    """The smallest variant within the allowed loss in `column` (metrics.selection_column): a drop in accuracy
    or F1, or a relative increase in MAE."""
    losses, limit, what = _losses(table, reference, settings, column)
    eligible = [name for name, loss in losses.items() if loss <= limit + 1e-12]
    if not eligible:
        raise StageError(f"no TF-Lite variant within {what}={limit} of the Keras model's validation score "
                           f"{reference:.4f}: " + ", ".join(f"{name} loses {value:.4f}"
                                                            for name, value in losses.items()))
    return min(eligible, key=lambda name: table[name]["size_bytes"])


def on_device(flatbuffer: bytes, model: edge.LiteRTModel, items: np.ndarray) -> dict:
    """Cost from the flatbuffer, LiteRT's working memory, and the same items on TFLite Micro against LiteRT."""
    cost = micro.cost(flatbuffer)
    row = {"macs": cost["macs"], "params": cost["params"],
           "litert_activation_bytes": micro.activation_bytes(flatbuffer)}
    tensors = np.stack([model.quantize(item)[0] for item in items])
    reference = np.stack([model.run(tensor[None])[0] for tensor in tensors])
    try:
        outputs, arena = micro.tflm_run(flatbuffer, tensors, row["litert_activation_bytes"])
    except micro.Unsupported as error:
        return {**row, "tflm_error": str(error), "tflm_missing_ops": error.ops}, cost
    if outputs.shape != reference.shape:  # the device would compute something else: it does not run there
        return {**row, "tflm_error": f"TFLite Micro's output has shape {list(outputs.shape[1:])}, LiteRT's "
                                     f"{list(reference.shape[1:])}"}, cost
    scale = model.output["quantization"][0] or 1.0
    row.update({"tflm_arena_bytes": arena, "tflm_exact_outputs": float((outputs == reference).mean()),
                "tflm_max_output_diff": float(np.abs(outputs.astype(np.float64) - reference).max() * scale)})
    if reference.ndim == 2 and reference.shape[1] > 1:
        row["tflm_top1_agreement"] = float((outputs.argmax(axis=1) == reference.argmax(axis=1)).mean())
    return row, cost


def fit_table(table: dict, targets: list[micro.Target], allowed: set[str]) -> dict:
    """Per target and variant: flash and RAM needed against the budget, the verdict, and the bundled choice
    (the smallest variant that runs there, fits and is within the allowed accuracy loss)."""
    result = {}
    for target in targets:
        rows = {}
        for name, row in table.items():
            if target.runtime == "tflm" and "tflm_arena_bytes" not in row:
                rows[name] = {"fits": False, "verdict": f"does not run: {row.get('tflm_error', 'not run on TFLM')}"}
                continue
            ram = row["tflm_arena_bytes"] if target.runtime == "tflm" else \
                row["litert_activation_bytes"] + row["size_bytes"]
            cell = micro.fit(target, row["size_bytes"], ram)
            short = [f"{what} by {-cell[f'{what}_margin_bytes']:,} B" for what in ("flash", "ram")
                     if cell[f"{what}_margin_bytes"] < 0]
            cell["verdict"] = "fits" if cell["fits"] else "does not fit: " + ", ".join(short)
            if cell["fits"] and name not in allowed:
                cell["verdict"] = "fits, but loses more accuracy than allowed"
            rows[name] = cell
        eligible = [name for name, cell in rows.items() if cell["fits"] and name in allowed]
        result[target.name] = {"target": dataclasses.asdict(target), "variants": rows,
                               "runtime_flash_bytes": target.runtime_flash_bytes,
                               "runtime_ram_bytes": target.runtime_ram_bytes,
                               "chosen": min(eligible, key=lambda name: table[name]["size_bytes"]) if eligible
                               else None}
    return result


def _fit_text(fits: dict) -> str:
    lines = ["| target | runtime | variant | flash needed / budget | RAM needed / budget | verdict |",
             "|---|---|---|---|---|---|"]
    for name, entry in fits.items():
        target = entry["target"]
        for variant, cell in entry["variants"].items():
            chosen = " **(bundled)**" if variant == entry["chosen"] else ""
            flash = f"{cell['flash_bytes']:,} / {target['flash_bytes']:,}" if "flash_bytes" in cell else "-"
            ram = f"{cell['ram_bytes']:,} / {target['ram_bytes']:,}" if "ram_bytes" in cell else "-"
            lines.append(f"| {name} | {target['runtime']} | {variant}{chosen} | {flash} | {ram} | {cell['verdict']} |")
    lines.append("")
    lines.append("Flash: model bytes plus the runtime's allowance; RAM: TFLM's measured arena (tflm) or LiteRT's "
                 "tensors and model (litert), plus the runtime's allowance (deploy/micro.py states both: "
                 + ", ".join(f"{runtime} {micro.RUNTIME_FLASH[runtime]:,} B flash, {micro.RUNTIME_RAM[runtime]:,} B RAM"
                             for runtime in micro.RUNTIME_FLASH) + ").")
    return "\n".join(lines)


def _target_bundle(staged: Path, entry: dict, folder: Path, data: splits.SplitData, table: dict,
                   config: config_module.Config, split_folder: Path, version: str, blessed: bool,
                   decision: dict) -> None:
    """deploy/bundles/<experiment>/<target>/: a C array for a microcontroller, the .tflite for a device."""
    chosen, target = entry["chosen"], entry["target"]
    place = staged / target["name"]
    place.mkdir()
    flatbuffer = (folder / f"{chosen}.tflite").read_bytes()
    model = edge.LiteRTModel(flatbuffer)
    labels = data.class_names or ["value"]
    (place / "labels.txt").write_text("\n".join(labels) + "\n")
    if target["runtime"] == "tflm":
        scale, zero_point = model.input["quantization"]
        ops = micro.ops(flatbuffer)
        cc, header = micro.c_array(flatbuffer, table[chosen]["tflm_arena_bytes"], ops, labels,
                                   (float(scale), int(zero_point)))
        (place / "model_data.cc").write_text(cc)
        (place / "model_data.h").write_text(header)
        (place / "ops.txt").write_text("\n".join(ops) + "\n")
    else:
        (place / "model.tflite").write_bytes(flatbuffer)
        shutil.copyfile(edge.__file__, place / "predict.py")
    # every target's bundle says how its inputs are made and read (and a detector's threshold and normalizer)
    workspace.write_json(place / "metadata.json", _metadata(model, data, chosen, table[chosen], config,
                                                           split_folder, version, blessed, decision))
    workspace.write_json(place / "fit.json", {"variant": chosen, **entry})


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


def _decision(config: config_module.Config, data: splits.SplitData, tags: dict) -> dict:
    """A binary classifier's decision threshold, chosen on validation when it trained (its registry tag), with the
    positive class it applies to: what the bundle's predictor and evaluate decide by."""
    if "val/threshold" not in tags:
        return {}
    positive = objectives.positive_index(data.class_names, config.train.positive_class)
    return {"decision_threshold": float(tags["val/threshold"]), "positive_index": positive,
            "positive_class": data.class_names[positive], "objective": config.train.objective,
            "floors": dict(config.train.floors), "floors_met": tags.get("val/floors_met") == "true"}


def _metadata(model: edge.LiteRTModel, data: splits.SplitData, variant: str, row: dict,
              config: config_module.Config, split_folder: Path, version: str, blessed: bool,
              decision: dict) -> dict:
    scale, zero_point = model.input["quantization"]
    preprocessing = kinds.get(data.dataset["kind"]).preprocessing(data.dataset, split_folder)
    detector = {"threshold": row["threshold"], "threshold_method": row["threshold_method"],
                "score": "mean squared error between the model's output and the normalized window"} \
        if "threshold" in row else {}
    return {**detector, **decision, "blessed": blessed,
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


def run(config: config_module.Config, force: bool = False, allow_unblessed: bool = False) -> stage.StageResult:
    """Checks the champion's gates, converts it to each variant, validates them on LiteRT and writes the bundle
    (a model that fails a gate only with `allow_unblessed`, tagged so)."""
    split_folder, _ = stage.upstream(config, "split", "export")
    bundle = workspace.bundle_dir(config.root, config.experiment)
    # The champion's version is an input: a new champion (train --force, tune) always reaches the bundle.
    version = tracking.champion_version(config)

    def body(folder: Path) -> dict:
        model = tracking.load_champion(config, version)
        data = splits.load_split(split_folder, in_memory_mb=config.runtime.in_memory_mb)
        keras_outputs = splits.predict({"keras": model}, data.x["val"])["keras"]
        decision = _decision(config, data, tracking.version_tags(config, version) or {})
        keras_row = validation(data, keras_outputs, config, decision=decision)
        gate = blessing(config, data, keras_outputs, version, allow_unblessed, decision, split_folder,
                        incumbent(config, bundle, version, model, data, split_folder))
        column = selection_column(config, data)
        reference = keras_row[column]
        # calibration samples from what the model trained on (an anomaly detector: normal windows only)
        representative = fitting.training_view(data).x["train"].head(config.export.representative_samples)
        table = {}
        for variant in config.export.variants:
            source, notes = optimized(model, variant, data, config)
            flatbuffer = tflite.convert(source, "int8" if variant.endswith("_int8") else variant, representative)
            workspace.write_bytes(folder / f"{variant}.tflite", flatbuffer)
            row = {"size_bytes": len(flatbuffer), "gzip_bytes": len(gzip.compress(flatbuffer, mtime=0))}
            row.update(measure(edge.LiteRTModel(flatbuffer), data, keras_outputs, config, decision))
            row.update(notes)
            table[variant] = row
        if "int8" in table and data.task == "classification" and \
                reference - table["int8"]["val_accuracy"] > config.export.triage_drop:
            triage(model, data, representative, keras_outputs, table, folder, config, decision)
        chosen = choose(table, reference, config.export, column)
        costs, items = {}, data.x["val"].head(config.export.micro_samples)
        for variant in table:
            flatbuffer = (folder / f"{variant}.tflite").read_bytes()
            device_row, costs[variant] = on_device(flatbuffer, edge.LiteRTModel(flatbuffer), items)
            table[variant].update(device_row)
        losses, limit, _ = _losses(table, reference, config.export, column)
        allowed = {name for name, loss in losses.items() if loss <= limit + 1e-12}
        fits = fit_table(table, [micro.resolve(item) for item in config.export.targets], allowed)
        largest = {variant: sorted(cost["layers"], key=lambda layer: -layer["macs"])[:5]
                   for variant, cost in costs.items()}
        workspace.write_json(folder / "export_table.json", {f"keras_{column}": reference, "keras": keras_row,
                                                            "gates": gate,
                                                            "selected_by": column, "variants": table,
                                                            "chosen": chosen, "targets": fits,
                                                            "largest_layers": largest})
        scalar = {name: {key: value for key, value in row.items() if not isinstance(value, (list, str))}
                  for name, row in table.items()}
        layers = "\n".join(f"| {layer['index']} | {layer['op']} | {layer['output']} | {layer['macs']:,} | "
                            f"{layer['params']:,} |" for layer in largest[chosen])
        text = (f"{gates.text(gate)}\n\nKeras {column} {reference:.4f}; bundled variant: {chosen}\n\n"
                f"{_table_text(scalar)}\n\n"
                f"Largest layers of {chosen} ({costs[chosen]['macs']:,} MACs, {costs[chosen]['params']:,} "
                f"parameters in all)\n\n| op index | op | output | MACs | parameters |\n|---|---|---|---|---|\n"
                f"{layers}\n\nWill it fit? (export.targets)\n\n{_fit_text(fits)}\n")
        workspace.write_text(folder / "export_table.md", text)
        workspace.write_text(folder / "fit_table.md", _fit_text(fits) + "\n")
        print(text)
        with workspace.staging(bundle) as staged:
            for entry in fits.values():
                if entry["chosen"]:
                    _target_bundle(staged, entry, folder, data, table, config, split_folder, version,
                                   gate["blessed"], decision)
            workspace.write_json(staged / "fit.json", fits)
            shutil.copyfile(folder / f"{chosen}.tflite", staged / "model.tflite")
            (staged / "labels.txt").write_text("\n".join(data.class_names or ["value"]) + "\n")
            metadata = _metadata(edge.LiteRTModel(folder / f"{chosen}.tflite"), data, chosen, table[chosen], config,
                                 split_folder, version, gate["blessed"], decision)
            workspace.write_json(staged / "metadata.json", metadata)
            shutil.copyfile(edge.__file__, staged / "predict.py")
        mlflow.log_artifacts(str(bundle), "bundle")
        mlflow.log_artifact(str(folder / "export_table.md"))
        mlflow.log_artifact(str(folder / "fit_table.md"))
        mlflow.set_tags({"export.chosen_variant": chosen, "champion_version": version,
                         **{f"export.target.{name}": entry["chosen"] or "none fits" for name, entry in fits.items()}})
        for variant, row in table.items():
            if "tflm_error" in row:
                mlflow.set_tag(f"export.{variant}.tflm", row["tflm_error"][:500])
        logged = {f"export/keras/{column}": reference, "export/blessed": int(gate["blessed"])}
        for variant, row in table.items():
            logged.update({f"export/{variant}/{key}": value for key, value in row.items()
                           if isinstance(value, (int, float)) and not isinstance(value, bool)})
        tracking.log_metrics(logged)
        return {**logged, "chosen": chosen, "champion_version": version}

    inputs = {"split": stage.identity(split_folder), "champion": f"{config.experiment} version {version}",
              "unblessed_allowed": allow_unblessed}
    return stage.execute(config, "export", ("export",), inputs, body, force,
                         still_valid=lambda manifest: (bundle / "model.tflite").is_file())
