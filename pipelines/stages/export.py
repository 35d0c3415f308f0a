"""export: the champion model to TF-Lite variants, each measured on the LiteRT interpreter; the edge bundle.

First the operator preflight (deploy/preflight.py): a layer that TFLite Micro cannot run (for a TFLM target) or
that cannot become int8 (for an int8 variant) stops export before any conversion, in one line naming the layer
and the operator; operators that run only on reference kernels of a target's library are printed and recorded
(preflight.json, MLflow).

For each variant: size raw and gzipped, accuracy on validation and top-1 agreement with the Keras model,
the largest probability difference, batch-1 latency (warm-up, then median and p90), multiply-accumulates and
parameters counted from the flatbuffer, and a run on TensorFlow Lite for Microcontrollers (the arena it
needed, agreement with LiteRT, or the operators it lacks). The smallest variant within
`export.max_accuracy_drop` of the Keras model goes into `deploy/bundles/<experiment>/`; for each device target
(`export.targets`), the smallest variant that also fits the target's flash and RAM and runs on its runtime goes
into `deploy/bundles/<experiment>/<target>/` (a C array for a microcontroller), and the fit table says why. A
target with its own champion (`champion-<target>`, from tune's search under its limits, `search.targets`) gets
that model instead, through the same preflight, gates, variants and fit check (its rows in the fit table name it).
The work is in pipelines/training/variants.py and deploy/ (measure, report, bundle); this stage orchestrates.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from deploy import bundle as bundles
from deploy import micro, preflight, report
from pipelines.core import config as config_module
from pipelines.core import stage, tracking, workspace
from pipelines.core.errors import StageError
from pipelines.data import splits
from pipelines.training import gates, variants


def _log(bundle: Path, folder: Path, table: dict, fits: dict, chosen: str, version: str, column: str,
         reference: float, blessed: bool) -> dict:
    mlflow.log_artifacts(str(bundle), "bundle")
    mlflow.log_artifact(str(folder / "export_table.md"))
    mlflow.log_artifact(str(folder / "fit_table.md"))
    mlflow.set_tags({"export.chosen_variant": chosen, "champion_version": version,
                     **{f"export.target.{name}": entry["chosen"] or f"none: {entry['why']}"[:500]
                        for name, entry in fits.items()}})
    for variant, row in table.items():
        if "tflm_error" in row:
            mlflow.set_tag(f"export.{variant}.tflm", row["tflm_error"][:500])
    logged = {f"export/keras/{column}": reference, "export/blessed": int(blessed)}
    for variant, row in table.items():
        logged.update({f"export/{variant}/{key}": value for key, value in row.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool)})
    tracking.log_metrics(logged)
    return logged


def run(config: config_module.Config, force: bool = False, allow_unblessed: bool = False) -> stage.StageResult:
    """Checks the champion's gates, converts it to each variant, validates them on LiteRT and writes the bundle
    (a model that fails a gate only with `allow_unblessed`, tagged so)."""
    split_folder, _ = stage.upstream(config, "split", "export")
    bundle = workspace.bundle_dir(config.root, config.experiment)
    # The champion's version is an input: a new champion (train --force, tune) always reaches the bundle.
    version = tracking.champion_version(config)
    # a board's own champion (`champion-<board>`, tune's search under its limits), when it is another version
    board_versions = {}
    for item in config.export.targets:
        name = micro.resolve(item).name
        found = tracking.champion_version(config, f"champion-{name}") if version is not None else None
        if found is not None and found != version:
            board_versions[name] = found

    def body(folder: Path) -> dict:
        model = tracking.load_champion(config, version)
        targets = [micro.resolve(item) for item in config.export.targets]
        checked = preflight.check(model, config.export.variants, targets)  # before any conversion time is spent
        if checked["stop"]:
            raise StageError(checked["stop"])
        workspace.write_json(folder / "preflight.json", checked)
        mlflow.log_artifact(str(folder / "preflight.json"))
        mlflow.set_tag("export.preflight.ops", ",".join(checked["ops"])[:500])
        tracking.log_metrics({f"export/preflight/{name}/reference_only_ops": len(slow)
                              for name, slow in checked["reference_only"].items()})
        for line in checked["warnings"]:
            print(f"[export] preflight: {line}")
        data = splits.load_split(split_folder, in_memory_mb=config.runtime.in_memory_mb)
        keras_outputs = splits.predict({"keras": model}, data.x["val"])["keras"]
        rule = variants.decision(config, data, tracking.version_tags(config, version) or {})
        keras_row = variants.validation(data, keras_outputs, config, rule=rule)
        gate = variants.blessing(config, data, keras_outputs, version, allow_unblessed, rule, split_folder,
                                 variants.incumbent(config, bundle, version, model, data, split_folder))
        column = variants.selection_column(config, data)
        reference = keras_row[column]
        table, flatbuffers, costs = variants.measured(model, data, keras_outputs, keras_row, config, folder, rule)
        items = len(data.y["val"])  # the resolution of an accuracy drop on them
        chosen = variants.choose(table, reference, config.export, column, items)
        allowed = variants.allowed(table, reference, config.export, column, items)
        fits = report.fit_table(table, targets, allowed)
        # a board with its own champion (a search under its limits) gets that model, checked the same way
        boards = {target.name: variants.board_champion(config, data, split_folder, target, board_versions[target.name],
                                                       folder, allow_unblessed)
                  for target in targets if target.name in board_versions}
        bundled = {name: boards[name]["fit"] if name in boards else entry for name, entry in fits.items()}
        workspace.write_json(folder / "export_table.json", {
            f"keras_{column}": reference, "keras": keras_row, "gates": gate, "selected_by": column,
            "variants": table, "chosen": chosen, "targets": bundled,
            "board_champions": {name: {"fit": found["fit"], "variants": found["table"]}
                                for name, found in boards.items()},
            "largest_layers": {variant: report.largest_layers(cost) for variant, cost in costs.items()}})
        text = report.export_text(gates.text(gate), column, reference, chosen, table, costs[chosen], bundled)
        workspace.write_text(folder / "export_table.md", text)
        workspace.write_text(folder / "fit_table.md", report.fit_text(bundled) + "\n")
        print(text)
        labels = data.class_names or ["value"]

        def described(variant: str) -> dict:
            return variants.metadata(flatbuffers[variant], data, variant, table[variant], config, split_folder,
                                     version, gate["blessed"], rule)

        def board_described(name: str, variant: str) -> dict:
            found = boards[name]
            return variants.metadata(found["flatbuffers"][variant], data, variant, found["table"][variant], config,
                                     split_folder, board_versions[name], found["blessed"], found["rule"])

        with workspace.staging(bundle) as staged:
            for name, entry in bundled.items():
                if entry["chosen"]:
                    target, variant = entry["target"], entry["chosen"]
                    source = boards[name] if name in boards else {"flatbuffers": flatbuffers, "table": table}
                    bundles.write(staged / name, source["flatbuffers"][variant], labels,
                                  board_described(name, variant) if name in boards else described(variant),
                                  target["runtime"], source["table"][variant].get("tflm_arena_bytes"),
                                  {"variant": variant, **entry})
            bundles.write(staged, flatbuffers[chosen], labels, described(chosen), fit=bundled)
        logged = _log(bundle, folder, table, bundled, chosen, version, column, reference, gate["blessed"])
        tracking.log_metrics({key.replace("export/", f"export/champion-{name}/", 1): value
                              for name, found in boards.items()
                              for key, value in variants.estimates({name: found["fit"]}).items()})
        registered = variants.register(config, folder, table, fits, described, data.x["val"].head(2), version,
                                       gate["blessed"])
        print("[export] registered: " + ", ".join(f"{config.experiment}-{variant} version {number}"
                                                  for variant, number in registered.items()))
        return {**logged, "chosen": chosen, "champion_version": version,
                **{f"registered/{variant}": number for variant, number in registered.items()}}

    inputs = {"split": stage.identity(split_folder), "champion": f"{config.experiment} version {version}",
              "unblessed_allowed": allow_unblessed,
              **({"board_champions": board_versions} if board_versions else {})}
    return stage.execute(config, "export", ("export",), inputs, body, force,
                         still_valid=lambda manifest: (bundle / "model.tflite").is_file())
