"""The export stage's library: a champion's TF-Lite variants converted, scored on validation data and chosen,
the gates' verdict (pipelines/training/gates.py) and the metadata a bundle carries. Measurement, the fit table,
the renderers and the bundle writer are in deploy/ (measure, report, bundle); this module joins them to the
split and the config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import numpy as np

import deploy.edge.predict as edge
from deploy import measure, report, tflite
from pipelines.core import config as config_module
from pipelines.core import tracking, workspace
from pipelines.core.errors import StageError
from pipelines.data import kinds, splits
from pipelines.training import champion, fitting, gates, metrics, objectives

OPTIMIZED = ("qat_int8", "pruned_int8", "pqat_int8", "clustered_int8")
ACCURACY_COLUMNS = ("val_accuracy",)  # a share of items, whose drop moves in steps of one item


def decision(config: config_module.Config, data: splits.SplitData, tags: dict) -> dict:
    """A binary classifier's decision threshold, chosen on validation when it trained (its registry tag), with the
    positive class it applies to: what the bundle's predictor and evaluate decide by."""
    if "val/threshold" not in tags:
        return {}
    positive = objectives.positive_index(data.class_names, config.train.positive_class)
    return {"decision_threshold": float(tags["val/threshold"]), "positive_index": positive,
            "positive_class": data.class_names[positive], "objective": config.train.objective,
            "floors": dict(config.train.floors), "floors_met": tags.get("val/floors_met") == "true"}


def _rule(rule: dict | None):
    return (rule["decision_threshold"], rule["positive_index"]) if rule else None


def validation(data: splits.SplitData, outputs: np.ndarray, config: config_module.Config,
               reference: np.ndarray | None = None, rule: dict | None = None) -> dict:
    """A model's validation columns (pipelines/training/metrics.py: accuracy and agreement with the Keras model,
    decided at a binary model's threshold when it has one, MAE, or an anomaly detector's own threshold and F1),
    and `val_<train.objective>` when one is named."""
    cut = _rule(rule)
    row = metrics.validation(data.task, data.y["val"], outputs, reference, data.x["val"], data.normalizer,
                             config.train.anomaly_percentile, cut)
    goal = config.train.objective
    if goal != "auto" and data.task in ("classification", "regression"):  # the project's metric, which chooses
        positive = objectives.positive_index(data.class_names, config.train.positive_class) if data.class_names else 1
        row[f"val_{goal}"] = objectives.score(goal, data.y["val"], outputs if data.task == "classification"
                                              else outputs[:, 0], cut[0] if cut else None, positive)
    return row


def selection_column(config: config_module.Config, data: splits.SplitData) -> str:
    """The validation column that chooses between variants: `val_<train.objective>` when named (a drop for a
    metric where higher is better, else a relative increase), else accuracy, MAE or a detector's F1."""
    if config.train.objective != "auto" and data.task in ("classification", "regression"):
        return f"val_{config.train.objective}"
    return metrics.selection_column(data.task, data.y["val"])


def losses(table: dict, reference: float, settings: config_module.ExportConfig, column: str, items: int = 0):
    """(variant -> loss in `column`, the allowed loss, the setting that allows it).

    Accuracy on `items` validation items moves in steps of 1/items, so an `export.max_accuracy_drop` below one
    step cannot be told apart from no drop: it is raised to one item (one changed decision of 10 is 0.1), and
    the setting's name says so."""
    higher = metrics.HIGHER_IS_BETTER.get(column)
    if higher is None:  # a named train.objective
        higher = objectives.OBJECTIVES[column.removeprefix("val_")][1]
    limit, what = (settings.max_accuracy_drop, "export.max_accuracy_drop") if higher else \
        (settings.max_mae_increase, "export.max_mae_increase")
    what = f"{what}={limit:g}"
    if column in ACCURACY_COLUMNS and items and limit < 1 / items:
        limit = 1 / items
        what += f" raised to {limit:.4g} (one of {items} validation items, the smallest drop accuracy on them can show)"
    return report.losses(table, column, reference, higher), limit, what


def allowed(table: dict, reference: float, settings: config_module.ExportConfig, column: str,
            items: int = 0) -> dict[str, float]:
    """Variant -> its loss in `column`, for the variants within the allowed loss (what a target's choice ranks
    ties by, deploy/report.py `choose`)."""
    lost, limit, _ = losses(table, reference, settings, column, items)
    return {name: loss for name, loss in lost.items() if loss <= limit + 1e-12}


def choose(table: dict, reference: float, settings: config_module.ExportConfig, column: str = "val_accuracy",
           items: int = 0) -> str:
    """The smallest variant within the allowed loss in `column` (metrics.selection_column): a drop in accuracy
    or F1, or a relative increase in MAE (`losses`: on `items` validation items).

    Raises:
        StageError: no variant is within it, naming each variant's loss.
    """
    lost, limit, what = losses(table, reference, settings, column, items)
    chosen = report.smallest(table, allowed(table, reference, settings, column, items))
    if chosen is None:
        raise StageError(f"no TF-Lite variant within {what} of the Keras model's validation score "
                         f"{reference:.4f}: " + ", ".join(f"{name} loses {value:.4f}" for name, value in lost.items()))
    return chosen


def optimized(model, variant: str, data: splits.SplitData, config: config_module.Config):
    """(Keras model to convert, numeric notes) for a variant: pruned, clustered or QAT-trained when asked."""
    from deploy import optimize

    if variant not in OPTIMIZED:
        return model, {}
    reason = optimize.optimizable(model)
    if reason:
        print(f"[export] {variant}: {reason}; falls back to post-training int8")
        mlflow.set_tag(f"export.{variant}.fallback", reason)
        return model, {"fallback": 1}
    settings, loss = config.export, fitting.loss_for(config, data.task)
    rate, batch = config.train.learning_rate, settings.optimize_batch_size
    view = fitting.training_view(data)  # what the model trained on
    x, y = fitting.fit_inputs(view.x["train"], view.y["train"], loss, data.num_outputs, batch, config.train.seed)
    try:
        if variant == "pruned_int8":
            pruned = optimize.prune(model, loss, x, y, settings.prune_sparsity, settings.optimize_epochs, rate, batch)
            return pruned, {"sparsity": optimize.sparsity(pruned)}
        if variant == "pqat_int8":
            quantized = optimize.prune_preserving_quantization(model, loss, x, y, settings.prune_sparsity,
                                                               settings.optimize_epochs, rate, batch)
            return quantized, {"sparsity": optimize.sparsity(quantized)}
        if variant == "clustered_int8":
            return optimize.cluster(model, loss, x, y, settings.clusters, settings.optimize_epochs, rate, batch), {}
        return optimize.quantization_aware(model, loss, x, y, settings.optimize_epochs, rate, batch), {}
    except optimize.Diverged as error:
        raise StageError(f"export: the {variant} fine-tune diverged: {error}; lower train.learning_rate, or leave "
                         f"{variant} out of export.variants") from None


def scored(flatbuffer: bytes, data: splits.SplitData, keras_outputs: np.ndarray, config: config_module.Config,
           rule: dict | None = None) -> dict:
    """Sizes, validation scores, difference from Keras and batch-1 latency of one TF-Lite variant on LiteRT."""
    model = edge.LiteRTModel(flatbuffer)
    outputs = splits.predict({"lite": model}, data.x["val"])["lite"]
    row = {**measure.sizes(flatbuffer), "max_score_diff": float(np.abs(outputs - keras_outputs).max())}
    row.update(validation(data, outputs, config, keras_outputs, rule))
    row.update(measure.latency(model, data.x["val"].head(1)[0], config.export.latency_runs))
    return row


def convert(model, data: splits.SplitData, keras_outputs: np.ndarray, keras_row: dict, config: config_module.Config,
            folder: Path, rule: dict | None = None) -> dict:
    """Every `export.variants` entry converted (after pruning, clustering or QAT when asked), written to
    `folder/<variant>.tflite` and scored; with an int8 variant that loses more than `export.triage_drop`, the
    triage's `int8_selective` too. Returns variant -> row."""
    # calibration samples from what the model trained on (an anomaly detector: normal windows only)
    representative = fitting.training_view(data).x["train"].head(config.export.representative_samples)
    table = {}
    for variant in config.export.variants:
        source, notes = optimized(model, variant, data, config)
        flatbuffer = tflite.convert(source, "int8" if variant.endswith("_int8") else variant, representative)
        workspace.write_bytes(folder / f"{variant}.tflite", flatbuffer)
        table[variant] = {**scored(flatbuffer, data, keras_outputs, config, rule), **notes}
    if "int8" in table and data.task == "classification" and \
            keras_row["val_accuracy"] - table["int8"]["val_accuracy"] > config.export.triage_drop:
        triage(model, data, representative, keras_outputs, table, folder, config, rule)
    return table


def measured(model, data: splits.SplitData, keras_outputs: np.ndarray, keras_row: dict,
             config: config_module.Config, folder: Path, rule: dict | None = None) -> tuple[dict, dict, dict]:
    """`convert`, then each variant run on TFLM and LiteRT's memory (deploy/measure.py `on_device`) on
    `export.micro_samples` validation items. Returns (variant -> row, variant -> flatbuffer, variant -> cost)."""
    table = convert(model, data, keras_outputs, keras_row, config, folder, rule)
    flatbuffers = {variant: (folder / f"{variant}.tflite").read_bytes() for variant in table}
    costs, items = {}, data.x["val"].head(config.export.micro_samples)
    for variant, flatbuffer in flatbuffers.items():
        row, costs[variant] = measure.on_device(flatbuffer, items)
        table[variant].update(row)
    return table, flatbuffers, costs


def triage(model, data, representative, keras_outputs, table: dict, folder: Path, config, rule=None) -> None:
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
    table["int8_selective"] = scored(flatbuffer, data, keras_outputs, config, rule)


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


def verdict(config: config_module.Config, data: splits.SplitData, outputs: np.ndarray, rule: dict | None = None,
            split_folder: Path | None = None, previous: tuple[str, np.ndarray] | None = None) -> dict:
    """The gates' verdict on a Keras model's validation outputs (pipelines/training/gates.py), nothing tagged."""
    kind = kinds.get(data.dataset["kind"])
    features = None if data.task == "anomaly" else {name: kind.features(data.x[name]) for name in ("train", "val")}
    values = splits.slice_values(split_folder, "val") if split_folder is not None else None
    slices = (data.dataset["slice_column"], values) if values is not None else None
    return gates.verdict(config, data, outputs, features, kind.BASELINE, _rule(rule), slices, previous)


def blessing(config: config_module.Config, data: splits.SplitData, outputs: np.ndarray, version: str,
             allow_unblessed: bool, rule: dict | None = None, split_folder: Path | None = None,
             previous: tuple[str, np.ndarray] | None = None) -> dict:
    """The gates' verdict on the Keras model's validation outputs, printed and tagged on the registered version
    (`blessed`).

    Raises:
        StageError: a gate failed and `allow_unblessed` is off, naming the check and its numbers.
    """
    gate = verdict(config, data, outputs, rule, split_folder, previous)
    print(gates.text(gate))
    tracking.tag_version(config, version, {"blessed": str(gate["blessed"]).lower()})
    mlflow.set_tags({"blessed": str(gate["blessed"]).lower()})
    if not gate["blessed"] and not allow_unblessed:
        raise StageError(f"export: version {version} of '{config.experiment}' fails its gates on validation data "
                         f"({'; '.join(gate['failed'])}); nothing bundled. Improve the model, or bundle it anyway "
                         "with --allow-unblessed (tagged blessed: false)")
    return gate


def board_champion(config: config_module.Config, data: splits.SplitData, split_folder: Path, target,
                   version: str, folder: Path, allow_unblessed: bool) -> dict:
    """A board's own champion (`champion-<board>`, the most accurate trial of a search under its limits, tune)
    through the main champion's checks, for that board alone: operator preflight, gates, the variants converted
    and scored into `folder/<board>/`, run on TFLM, and the board's fit-table entry with its choice.

    Returns:
        {"fit": the fit-table entry (`champion` names the version; `chosen` None with `why` when a preflight stop,
        a failed gate or no variant keeps it from the bundle), "table", "flatbuffers", "rule", "blessed"}.
    """
    from deploy import preflight

    label = f"champion-{target.name} version {version}"
    model = tracking.load_champion(config, version)
    checked = preflight.check(model, config.export.variants, [target])
    empty = {"target": dataclasses.asdict(target), "variants": {}, "chosen": None, "champion": label}
    if checked["stop"]:
        return {"fit": {**empty, "why": f"{label}: {checked['stop']}"}, "table": {}, "flatbuffers": {},
                "rule": None, "blessed": False}
    outputs = splits.predict({"keras": model}, data.x["val"])["keras"]
    rule = decision(config, data, tracking.version_tags(config, version) or {})
    keras_row = validation(data, outputs, config, rule=rule)
    gate = verdict(config, data, outputs, rule, split_folder)
    tracking.tag_version(config, version, {"blessed": str(gate["blessed"]).lower()})
    column = selection_column(config, data)
    table, flatbuffers, _ = measured(model, data, outputs, keras_row, config, folder / target.name, rule)
    fit = {**report.fit_table(table, [target], allowed(table, keras_row[column], config.export, column,
                                                       len(data.y["val"])))
           [target.name], "champion": label, f"keras_{column}": keras_row[column]}
    if not gate["blessed"] and not allow_unblessed:
        fit.update({"chosen": None, "why": f"{label} fails its gates on validation data ({'; '.join(gate['failed'])})"})
    elif fit["why"]:
        fit["why"] = f"{label}: {fit['why']}"
    return {"fit": fit, "table": table, "flatbuffers": flatbuffers, "rule": rule, "blessed": gate["blessed"]}


def metadata(flatbuffer: bytes, data: splits.SplitData, variant: str, row: dict, config: config_module.Config,
             split_folder: Path, version: str, blessed: bool, rule: dict) -> dict:
    """A bundle's metadata.json: how a raw input becomes the model's input (the kind's preprocessing and the
    normalizer inside the model), the quantization of input and output, the classes, a detector's threshold or
    a binary model's decision rule, the gates' verdict, the source version and the variant's validation row."""
    model = edge.LiteRTModel(flatbuffer)
    scale, zero_point = model.input["quantization"]
    preprocessing = kinds.get(data.dataset["kind"]).preprocessing(data.dataset, split_folder)
    detector = {"threshold": row["threshold"], "threshold_method": row["threshold_method"],
                "score": "mean squared error between the model's output and the normalized window"} \
        if "threshold" in row else {}
    return {**detector, **rule, "blessed": blessed, "variant": variant, "task": data.task,
            "input": {"shape": [int(v) for v in model.input["shape"]], "dtype": model.input["dtype"].__name__,
                      "scale": float(scale), "zero_point": int(zero_point)},
            "output": {"dtype": model.output["dtype"].__name__, "scale": float(model.output["quantization"][0]),
                       "zero_point": int(model.output["quantization"][1])},
            "preprocessing": preprocessing, "normalization": {"inside_model": True, **data.normalizer},
            "class_names": data.class_names,
            "source": {"experiment": config.experiment, "registered_model": f"{config.experiment}@champion",
                       "version": version},
            "metrics": row}


def register(config: config_module.Config, folder: Path, table: dict, fits: dict, described, example: np.ndarray,
             source_version: str, blessed: bool) -> dict[str, str]:
    """Each variant as an MLflow pyfunc model on LiteRT (deploy/pyfunc.py), registered as a version of
    `<experiment>-<variant>` and tagged with its size, TFLM arena, validation scores, the gates' verdict, the Keras
    version it came from and its verdict per device target. Returns variant -> registered version."""
    from mlflow.tracking import MlflowClient

    from deploy import pyfunc

    versions, client = {}, MlflowClient()
    example = np.asarray(example, dtype=np.float32)  # the signature: float inputs, as the interpreter is fed
    for variant, row in table.items():
        metadata = workspace.write_json(folder / f"{variant}.metadata.json", described(variant))
        name = f"{config.experiment}-{variant}"
        version = pyfunc.log(f"tflite-{variant}", folder / f"{variant}.tflite", metadata, example, name)
        tags = {"source_version": source_version, "blessed": str(blessed).lower(), "variant": variant,
                **{key: str(value) for key, value in row.items() if isinstance(value, (int, float))
                   and not isinstance(value, bool) and key in ("size_bytes", "gzip_bytes", "tflm_arena_bytes",
                                                              "macs", "params", "val_accuracy", "val_mae", "val_f1",
                                                              "latency_ms_median")},
                **{f"fit.{target}": entry["variants"][variant]["verdict"] for target, entry in fits.items()},
                **{f"latency_ms.{target}": report.latency_text(entry["variants"][variant])
                   for target, entry in fits.items()}}
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value[:5000])
        versions[variant] = version
    tracking.log_metrics(estimates(fits))
    return versions


ESTIMATED = ("latency_ms", "latency_low_ms", "latency_high_ms", "energy_uj", "battery_hours")


def estimates(fits: dict) -> dict[str, float]:
    """The fit table's estimates as metrics: `export/<variant>/<target>/estimated_latency_ms` and its band,
    `.../estimated_energy_uj`, `.../estimated_battery_hours`, `.../meets_deadline` (1 or 0)."""
    logged = {}
    for target, entry in fits.items():
        for variant, cell in entry["variants"].items():
            prefix = f"export/{variant}/{target}/"
            logged.update({f"{prefix}estimated_{key}": float(cell[key]) for key in ESTIMATED if key in cell})
            if "meets_deadline" in cell:
                logged[f"{prefix}meets_deadline"] = int(cell["meets_deadline"])
    return logged

