"""The end-to-end slice on a tiny config: every stage's real run(), MLflow, the registry, LiteRT, the bundle."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from pipelines import __main__ as cli
from pipelines.core import ledger, tracking, workspace
from pipelines.core import stage as stage_module
from pipelines.data import splits
from pipelines.stages import evaluate, pipeline, split
from pipelines.training import evaluation
from tests.conftest import REPO, TINY, parse_c_array, png, split_arrays, stage_command, tamper_shard, tiny_config

STAGE_NAMES = [stage.name for stage in pipeline()]


def _cli(root, stage, *extra):
    """Runs the CLI on the tiny config; `extra` arguments come last, so their --set wins."""
    return cli.main([stage, *[item for override in TINY for item in ("--set", override)],
                     "--set", f"runtime.root={root}", *extra])


@pytest.fixture(scope="module")
def ran_in_a_terminal(tmp_path_factory):
    """The tiny pipeline as a user runs it, in a process of its own: (root, what it printed on stdout and stderr)."""
    root = tmp_path_factory.mktemp("pipeline")
    done = subprocess.run(stage_command("all", [*TINY, f"runtime.root={root}"]), cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done.stdout, done.stderr


@pytest.fixture(scope="module")
def ran(ran_in_a_terminal):
    root, _, _ = ran_in_a_terminal
    return root, tiny_config(root)


# What TensorFlow, LiteRT and absl print on their own: C++ log lines (absl's "W0000 00:00:...", TensorFlow's
# "2026-... I tensorflow/..."), LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate", Python loggers'
# "WARNING:absl:", the converter's printouts, warnings raised in their files (".../tensorflow/lite/...py:846").
CHATTER = re.compile(r"^(INFO:|WARNING:absl|WARNING: All log messages|[IWE]\d{4} |\d{4}-\d\d-\d\d \S+: [IWE] "
                     r"|fully_quantize:)|tensorflow/|XNNPACK|absl::")


def test_the_terminal_shows_each_stage_time_the_tune_bar_and_no_tensorflow_chatter(ran_in_a_terminal):
    _, out, err = ran_in_a_terminal
    summary = re.findall(r"^  (\w+) +\d+\.\ds  run [0-9a-f]{32} ", out, re.MULTILINE)
    assert summary == STAGE_NAMES  # each stage's line: its wall time and its run (a skipped one says so)
    chatter = [line for line in (out + err).replace("\r", "\n").splitlines() if CHATTER.search(line)]
    assert not chatter, chatter
    bar = err.replace("\r", "\n")  # tqdm's bar on stderr: trials done of planned, the best score so far
    assert re.search(r"^\[tune\] random: 100%.* 1/1 \[.*best val/accuracy 0\.\d{4}", bar, re.MULTILINE), bar[-2000:]
    assert "[tune] trial 0 (random) complete" in out


def _runs(config):
    tracking.configure(config)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(config.experiment)
    return client, client.search_runs([experiment.experiment_id], max_results=500)


def test_the_shipped_variant_loads_from_the_registry_and_predicts_as_the_bundle(ran):
    import mlflow

    from deploy.edge.predict import LiteRTModel

    root, config = ran
    export = workspace.read_manifest(workspace.stage_dir(root, config.experiment, "export"))
    chosen = export["metrics"]["chosen"]
    version = export["metrics"][f"registered/{chosen}"]
    tracking.configure(config)
    model = mlflow.pyfunc.load_model(f"models:/{config.experiment}-{chosen}/{version}")
    x_val, = split_arrays(workspace.stage_dir(root, config.experiment, "split"), "val", "x")
    bundle = LiteRTModel(workspace.bundle_dir(root, config.experiment) / "model.tflite")
    np.testing.assert_array_equal(model.predict(x_val.astype(np.float32)), bundle.predict(x_val))
    tags = MlflowClient().get_model_version(f"{config.experiment}-{chosen}", version).tags
    assert tags["source_version"] == export["metrics"]["champion_version"] and int(tags["size_bytes"]) > 0
    fits = workspace.read_json(workspace.bundle_dir(root, config.experiment) / "fit.json")
    assert {key: value for key, value in tags.items() if key.startswith("fit.")} == {
        f"fit.{target}": entry["variants"][chosen]["verdict"] for target, entry in fits.items()}


def test_every_stage_wrote_a_manifest_and_the_bundle(ran):
    root, config = ran
    for stage in STAGE_NAMES:
        manifest = workspace.read_manifest(workspace.stage_dir(root, config.experiment, stage))
        assert manifest is not None and manifest["run_id"], stage
        assert workspace.is_fresh(workspace.stage_dir(root, config.experiment, stage), manifest["fingerprint"])
    bundle = workspace.bundle_dir(root, config.experiment)
    metadata = json.loads((bundle / "metadata.json").read_text())
    assert (bundle / "labels.txt").read_text().split() == [str(digit) for digit in range(10)]
    assert metadata["input"]["shape"] == [1, 8, 8, 1]
    assert metadata["variant"] in ("float32", "int8")
    evaluated = workspace.stage_dir(root, config.experiment, "evaluate")
    report = workspace.read_json(evaluated / "test_report.json")
    variant = report["record"]["tflite_variant"]
    assert variant == metadata["variant"] and set(report["results"]) == {"keras", variant}
    keras_row = report["results"]["keras"]
    x_test, y_test = split_arrays(workspace.stage_dir(root, config.experiment, "split"), "test", "x", "y")
    assert keras_row["accuracy"] > 0.3 and keras_row["roc_auc"] > 0.7  # chance: 0.1 and 0.5; tiny config ~0.45
    confusion = np.array(keras_row["confusion_matrix"])
    assert (confusion.sum(axis=1) == np.bincount(y_test, minlength=10)).all()
    assert keras_row["accuracy"] == pytest.approx(np.trace(confusion) / len(y_test))
    assert keras_row["macro_recall"] == pytest.approx(np.mean([row["recall"]
                                                                for row in keras_row["per_class"].values()]))
    from deploy.edge.predict import LiteRTModel

    on_device = (LiteRTModel(bundle / "model.tflite").predict(x_test).argmax(axis=1) == y_test).mean()
    assert report["results"][variant]["accuracy"] == pytest.approx(on_device)
    assert abs(report["results"][variant]["accuracy"] - keras_row["accuracy"]) <= 0.05
    low, high = report["intervals"]["keras"]["accuracy"]
    assert low <= keras_row["accuracy"] <= high
    # the gate's classical model, fitted on train, scored once on the same test split beside the network
    baseline = report["baseline"]
    assert baseline["model"].startswith("logistic regression") and 0.5 < baseline["results"]["accuracy"] <= 1.0
    assert "| baseline | " in (evaluated / "test_report.md").read_text()
    assert set(keras_row["per_class"]["3"]) == {"precision", "recall", "specificity", "npv", "f1", "support"}
    for name, size in (("confusion_keras.png", (495, 450)), (f"confusion_{variant}.png", (495, 450)),
                       ("reliability.png", (450, 450))):
        png(evaluated / name, size)
    assert f"| keras | {keras_row['accuracy']:.4f} [" in (evaluated / "test_report.md").read_text()


def test_mlflow_holds_one_parent_with_a_nested_run_per_stage(ran):
    _, config = ran
    client, runs = _runs(config)
    parents = [run for run in runs if run.data.tags.get("stage") == "pipeline"]
    assert len(parents) == 1
    children = {run.data.tags["stage"]: run for run in runs
                if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert set(STAGE_NAMES) <= set(children)
    train = children["train"]
    assert train.data.params["train.epochs"] == "3"
    assert {"train/loss", "val/accuracy", "val/loss"} <= set(train.data.metrics)
    export = children["export"]
    assert export.data.metrics["export/int8/size_bytes"] < export.data.metrics["export/float32/size_bytes"]
    assert train.data.metrics["val/accuracy"] > 0.3
    int8 = export.data.metrics["export/int8/val_accuracy"]
    assert int8 > 0.3 and abs(int8 - export.data.metrics["export/keras/val_accuracy"]) <= 0.05
    variant = children["evaluate"].data.tags["evaluate.tflite_variant"]
    assert {"test/accuracy", f"test/{variant}/accuracy", "test/roc_auc", "test/macro_specificity",
            "test/macro_npv", "test/accuracy_ci_low", "test/ece"} <= set(children["evaluate"].data.metrics)
    artifacts = {item.path for item in client.list_artifacts(children["evaluate"].info.run_id, "evaluation")}
    assert "evaluation/test_report.md" in artifacts


def test_champion_loads_back_as_a_keras_model(ran):
    import tf_keras as keras

    root, config = ran
    model = tracking.load_champion(config)
    assert isinstance(model, keras.Model)
    x, y = split_arrays(workspace.stage_dir(root, config.experiment, "split"), "val", "x", "y")
    accuracy = (model.predict(x.astype(np.float32), verbose=0).argmax(axis=1) == y).mean()
    table = workspace.read_json(workspace.stage_dir(root, config.experiment, "export") / "export_table.json")
    assert accuracy > 0.3 and accuracy == pytest.approx(table["keras_val_accuracy"], abs=1e-6)


def test_split_manifest_is_byte_identical_for_the_same_config(ran, tmp_path):
    root, config = ran
    other = tiny_config(tmp_path)
    from pipelines.stages import clean

    clean.run(other)
    split.run(other)
    first = workspace.stage_dir(root, config.experiment, "split") / splits.MANIFEST
    second = workspace.stage_dir(tmp_path, config.experiment, "split") / splits.MANIFEST
    assert first.read_bytes() == second.read_bytes()
    manifest = workspace.read_json(first)
    by_split = {name: {item["sha256"] for item in manifest["items"] if item["split"] == name}
                for name in splits.SPLITS}
    assert not (by_split["train"] & by_split["test"]) and not (by_split["train"] & by_split["val"])


def test_changed_test_item_is_refused_naming_it(ran):
    root, config = ran
    folder = workspace.stage_dir(root, config.experiment, "split")
    x, y, ids = split_arrays(folder, "test", "x", "y", "ids")
    hashes = lambda images, labels: [splits.item_hash(image, label.item())  # noqa: E731
                                     for image, label in zip(images, labels)]
    evaluation.verify_test_items(folder, hashes(x, y), y, ids)  # as split wrote them: accepted
    edited = x.copy()
    edited[3] = 255 - edited[3]
    with pytest.raises(ValueError, match=rf"changed \['{ids[3]}'\]"):
        evaluation.verify_test_items(folder, hashes(edited, y), y, ids)
    relabelled = y.copy()
    relabelled[5] = (y[5] + 1) % 10  # a label changed on disk, pixels untouched
    with pytest.raises(ValueError, match=rf"labels changed: \['{ids[5]} \(label {y[5]} -> {relabelled[5]}\)'\]"):
        evaluation.verify_test_items(folder, hashes(x, relabelled), relabelled, ids)


def _val_images_and_labels(root, config, folder, count: int) -> tuple[list, list[str]]:
    """`count` validation images written as PNG files, and the labels LiteRT gives them with the bundle."""
    from deploy.edge.predict import LiteRTModel

    bundle = workspace.bundle_dir(root, config.experiment)
    x, = split_arrays(workspace.stage_dir(root, config.experiment, "split"), "val", "x")
    paths = []
    for index in range(count):
        paths.append(folder / f"val{index}.png")
        Image.fromarray(x[index, ..., 0]).save(paths[-1])
    labels = (bundle / "labels.txt").read_text().split()
    return paths, [labels[index] for index in LiteRTModel(bundle / "model.tflite").predict(x[:count]).argmax(axis=1)]


def test_edge_predictor_matches_the_pipeline_and_needs_no_tensorflow(ran, tmp_path):
    root, config = ran
    bundle = workspace.bundle_dir(root, config.experiment)
    paths, expected = _val_images_and_labels(root, config, tmp_path, 12)
    script = ("import sys; from deploy.edge import predict; predict.main(sys.argv[1:]); "
              "assert 'tensorflow' not in sys.modules, 'edge predictor imported tensorflow'")
    output = subprocess.run([sys.executable, "-c", script, str(bundle), *map(str, paths)],
                            capture_output=True, text=True, check=True).stdout
    labels = [line.split("\t")[1] for line in output.splitlines()]
    assert labels == [str(label) for label in expected]


def test_an_identical_upstream_rerun_or_a_memory_knob_changes_nothing_downstream(ran):
    root, config = ran
    _, before = _runs(config)
    champion = tracking.champion_version(config)
    folders = {name: workspace.stage_dir(root, config.experiment, name) for name in STAGE_NAMES}
    manifests = {name: workspace.read_manifest(folder) for name, folder in folders.items()}
    assert _cli(root, "clean", "--force") == 0
    rerun = workspace.read_manifest(folders["clean"])
    assert rerun["run_id"] != manifests["clean"]["run_id"]  # a new run, byte-identical outputs
    assert rerun["outputs"] == manifests["clean"]["outputs"]
    assert _cli(root, "all") == 0
    assert _cli(root, "all", "--set", "runtime.in_memory_mb=0") == 0  # speed and memory only
    _, after = _runs(config)
    new = [run.data.tags.get("stage") for run in after if run.info.run_id not in {old.info.run_id for old in before}]
    assert sorted(new) == ["clean", "pipeline", "pipeline"]  # the forced clean, then two parents that skipped
    assert tracking.champion_version(config) == champion
    for name in STAGE_NAMES:
        if name != "clean":
            assert workspace.read_manifest(folders[name])["run_id"] == manifests[name]["run_id"], name
    evaluations = [run for run in after if run.data.tags.get("stage") == "evaluate"]
    assert len(evaluations) == 1


@pytest.mark.slow
def test_second_run_skips_and_test_split_is_used_once(ran, capsys):
    root, config = ran
    _, before = _runs(config)
    capsys.readouterr()
    assert _cli(root, "all") == 0
    summary = re.findall(r"^  (\w+) +(\d+\.\d)s  skipped \(unchanged\)", capsys.readouterr().out, re.MULTILINE)
    assert [name for name, _ in summary] == STAGE_NAMES  # each stage's line says its wall time and that it skipped
    _, after = _runs(config)
    new = [run for run in after if run.info.run_id not in {old.info.run_id for old in before}]
    assert [run.data.tags["stage"] for run in new] == ["pipeline"]  # only the parent; every stage skipped

    # A changed training config reruns train and tune (the champion rule decides whether export follows); an
    # evaluation of the same test split is refused, naming the first use.
    _cli(root, "all", "--set", "train.epochs=2")
    manifests = {stage: workspace.read_manifest(workspace.stage_dir(root, config.experiment, stage))
                 for stage in STAGE_NAMES}
    assert manifests["train"]["config"]["train"]["epochs"] == 2
    # the search keys on the split and the search's own config, never on train's outputs
    assert set(manifests["tune"]["inputs"]) == {"split"}
    assert manifests["tune"]["inputs"]["split"] == stage_module.identity(workspace.stage_dir(root, config.experiment,
                                                                                      "split"))
    first = [run for run in after if run.data.tags.get("stage") == "evaluate"][0].info.run_id
    with pytest.raises(ledger.TestSetUsed, match=f"first evaluated on .* by MLflow run {first} \\(1 use"):
        evaluate.run(tiny_config(root, "train.epochs=2"), force=True)

    assert _cli(root, "evaluate", "--set", "train.epochs=2", "--reuse-test", "--force") == 0
    _, runs = _runs(config)
    reused = [run for run in runs if run.data.tags.get("test_reused") == "true"]
    assert len(reused) == 1 and reused[0].data.metrics["test/uses"] == 2
    with pytest.raises(ledger.TestSetUsed, match=f"by MLflow run {first} \\(2 use"):  # still the first use
        evaluate.run(tiny_config(root, "train.epochs=2"), force=True)


def test_changed_procedure_or_tampered_test_item_stops_evaluation(ran):
    root, config = ran
    settings = ("train.epochs=2", "evaluate.bootstrap_resamples=50")
    with pytest.raises(ledger.TestSetUsed, match="the evaluation procedure changed"):
        evaluate.run(tiny_config(root, *settings), reuse_test=True)
    folder = workspace.stage_dir(root, config.experiment, "split")
    ids, = workspace.load_arrays(folder, "test", "ids")
    tamper_shard(folder, "test", 0)  # a test image edited in its shard after the split
    assert _cli(root, "evaluate", "--set", "train.epochs=2", "--reuse-test", "--force") == 1
    with pytest.raises(ValueError, match=r"part-00000.tfrecord: shard fails its SHA-256 checksum"):
        evaluate.run(tiny_config(root, "train.epochs=2"), force=True, reuse_test=True)
    tamper_shard(folder, "test", 1, resign=True)  # and one whose shard checksum was updated to match
    first, second = sorted(ids[:2])
    with pytest.raises(ValueError, match=rf"changed \['{first}', '{second}'\]"):
        evaluate.run(tiny_config(root, "train.epochs=2"), force=True, reuse_test=True)


@pytest.mark.slow
def test_every_export_variant_converts_and_runs_on_litert(tmp_path):
    variants = "[float32, dynamic_range, float16, int8, qat_int8, pruned_int8, pqat_int8, clustered_int8]"
    assert _cli(tmp_path, "all", "--set", f"export.variants={variants}", "--set", "export.optimize_epochs=1",
                "--set", "export.max_accuracy_drop=1.0") == 0
    table = workspace.read_json(workspace.stage_dir(tmp_path, "digits", "export") / "export_table.json")
    rows = table["variants"]
    assert set(rows) == {"float32", "dynamic_range", "float16", "int8", "qat_int8", "pruned_int8", "pqat_int8",
                         "clustered_int8"}
    # a tiny model: the flatbuffer's fixed overhead weighs more than in the digits benchmark
    assert rows["int8"]["size_bytes"] < 0.7 * rows["float32"]["size_bytes"]
    assert rows["dynamic_range"]["size_bytes"] < rows["float16"]["size_bytes"] < rows["float32"]["size_bytes"]
    assert rows["pruned_int8"]["sparsity"] == pytest.approx(0.8, abs=0.02)
    assert rows["pruned_int8"]["gzip_bytes"] < rows["int8"]["gzip_bytes"]
    # Pruning-preserving QAT: the zeros survive quantization-aware fine-tuning and the int8 file compresses.
    assert rows["pqat_int8"]["sparsity"] == pytest.approx(0.8, abs=0.02)
    assert rows["pqat_int8"]["gzip_bytes"] < rows["int8"]["gzip_bytes"]
    keras_accuracy = table["keras_val_accuracy"]
    assert keras_accuracy > 0.3
    assert rows["float32"]["agreement"] >= 0.99 and rows["float32"]["max_score_diff"] < 1e-3
    for name in ("float32", "dynamic_range", "float16", "int8"):  # post-training variants track the Keras model
        assert abs(rows[name]["val_accuracy"] - keras_accuracy) <= 0.05, name
    assert all(0 < row["latency_ms_median"] <= row["latency_ms_p90"] for row in rows.values())
    assert all(row["end_to_end_ms_median"] > 0 for row in rows.values())
    assert table["chosen"] == min(rows, key=lambda name: rows[name]["size_bytes"])  # any drop allowed here


@pytest.mark.slow
def test_int8_triage_reports_the_worst_layers_and_adds_a_selective_variant(tmp_path):
    assert _cli(tmp_path, "all", "--set", "export.triage_drop=-1", "--set", "export.triage_layers=2") == 0
    folder = workspace.stage_dir(tmp_path, "digits", "export")
    errors = pd.read_csv(folder / "int8_triage.csv")
    assert {"tensor_name", "rmse/scale"} <= set(errors.columns) and len(errors) >= 3
    assert list(errors["rmse/scale"]) == sorted(errors["rmse/scale"], reverse=True)
    table = workspace.read_json(folder / "export_table.json")
    selective = table["variants"]["int8_selective"]
    assert selective["val_accuracy"] > 0.3 and abs(selective["val_accuracy"] - table["keras_val_accuracy"]) <= 0.05
    assert (folder / "int8_selective.tflite").stat().st_size == selective["size_bytes"]
    from deploy.edge.predict import LiteRTModel

    (x_val,) = split_arrays(workspace.stage_dir(tmp_path, "digits", "split"), "val", "x")
    assert LiteRTModel(folder / "int8_selective.tflite").predict(x_val[:4]).shape == (4, 10)


@pytest.mark.slow
def test_edge_predictor_runs_in_a_virtual_environment_without_tensorflow(ran, tmp_path):
    """The device side: a fresh venv with only ai-edge-litert, numpy and pillow runs the bundle's predict.py."""
    root, config = ran
    venv = tmp_path / "edge"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pins = [line for line in open("pyproject.toml").read().split('"') if line.startswith(
        ("ai-edge-litert==", "numpy==", "pillow=="))]
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    assert subprocess.run([str(python), "-c", "import tensorflow"], capture_output=True).returncode != 0
    bundle = workspace.bundle_dir(root, config.experiment)
    paths, expected = _val_images_and_labels(root, config, tmp_path, 10)
    output = subprocess.run([str(python), str(bundle / "predict.py"), str(bundle), *map(str, paths)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert output.returncode == 0, output.stderr[-2000:]
    assert [line.split("\t")[1] for line in output.stdout.splitlines()] == expected


def test_the_mlflow_ui_shows_the_numbers_that_chose_each_model(ran):
    """What the runs table shows is the latest step of each metric: it must be the score that decided."""
    import mlflow

    root, config = ran
    client, runs = _runs(config)
    experiment = client.get_experiment_by_name(config.experiment)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on its runs
    versions = client.search_model_versions(f"name = '{config.experiment}'")
    champion = tracking.champion_version(config)
    for version in versions:
        info = mlflow.models.get_model_info(f"models:/{config.experiment}/{version.version}")
        assert info.signature is not None and info.saved_input_example_info is not None, version.version
        assert version.tags["split_manifest"] and version.tags["config_sha256"] and version.description
        shown = client.get_run(version.run_id).data.metrics["val/accuracy"]
        assert shown == pytest.approx(float(version.tags["val/accuracy"])), version.version
    assert champion in {str(version.version) for version in versions}
    tune = workspace.read_json(workspace.stage_dir(root, config.experiment, "tune") / "trials.json")
    for trial in tune["trials"]:
        run = client.get_run(trial["run_id"])
        assert run.data.metrics["val/accuracy"] == pytest.approx(trial["val/accuracy"])
        seconds = (run.info.end_time - run.info.start_time) / 1000
        assert seconds == pytest.approx(trial["seconds"], abs=0.5)  # the trial's own duration, not the logging's
    by_stage = {run.data.tags.get("stage"): run for run in runs}
    for stage in ("export", "evaluate"):
        assert by_stage[stage].data.tags["champion_version"] == champion


@pytest.mark.slow
def test_make_ui_opens_on_the_runs_table_with_the_champions_true_score(ran):
    """A real browser over `make ui`: the printed link opens the runs table (not the GenAI traces page), and
    the champion's row shows the validation score that made it champion."""
    import os
    import re

    from tests.conftest import REPO, artifacts_folder, free_port, stop, system_tool, wait_for_port

    chromium = system_tool("chromium", "chromium-browser", "/usr/bin/chromium")
    from playwright import sync_api
    root, config = ran
    champion = tracking.champion_version(config)
    client, _ = _runs(config)
    version = client.get_model_version(config.experiment, champion)
    score, run = float(version.tags["val/accuracy"]), client.get_run(version.run_id)
    ancestors = []  # the runs to expand, outermost first, to reach the champion's run in the tree
    while "mlflow.parentRunId" in run.data.tags:
        ancestors.insert(0, run.data.tags["mlflow.parentRunId"])
        run = client.get_run(ancestors[0])
    port = free_port()
    server = subprocess.Popen(["make", "-s", "ui", f"UI_PORT={port}", f"ARGS=--set runtime.root={root}"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                              env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    try:
        printed = [server.stdout.readline() for _ in range(2)]
        link = re.search(rf"{config.experiment}: (http://\S+)", "".join(printed))
        assert link, printed
        wait_for_port(port, server)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 2400, "height": 900})  # a fresh profile: a first visit
            page.goto(link.group(1), wait_until="load")
            page.get_by_text("Run Name").first.wait_for(timeout=60_000)
            assert "/runs" in page.url and page.get_by_text("Start tracing").count() == 0
            for attempt in range(3):  # what a user does to see a metric's column; the menu fills as metrics load
                page.get_by_role("button", name="Columns", exact=True).click()
                choice = page.get_by_text("val/accuracy", exact=True)
                try:
                    choice.first.wait_for(timeout=20_000)
                    break
                except sync_api.TimeoutError:
                    assert attempt < 2, "the Columns menu never offered val/accuracy"
                    page.keyboard.press("Escape")
            choice.first.click()
            page.keyboard.press("Escape")

            def row_of(run_id):  # the row whose name links to the run's page
                return page.locator("[role=row]").filter(has=page.locator(f"a[href*='{run_id}']")).first

            for run_id in ancestors:
                row_of(run_id).locator("button[data-component-id*=runnamecellrenderer]").click()
            named = row_of(version.run_id)
            named.wait_for(timeout=30_000)
            index = named.get_attribute("row-index")  # the grid draws a row's name and values apart
            page.screenshot(path=str(artifacts_folder() / "mlflow-ui-runs.png"))
            parts = page.locator(f"[role=row][row-index='{index}']")
            values = parts.filter(has_text=f"v{champion}").first  # the part with the Models and metric columns
            values.wait_for(timeout=30_000)
            cells = values.inner_text().split()
            assert page.get_by_role("columnheader", name="val/accuracy", exact=True).count() >= 1
            page.screenshot(path=str(artifacts_folder() / "mlflow-ui-runs.png"))
            browser.close()
        shown = float(cells[-1])  # the val/accuracy column, the last one added
        assert shown == pytest.approx(score, abs=1e-6), cells
    finally:
        stop(server)


def test_export_bundles_each_device_target_with_its_fit(ran):
    from deploy import micro

    root, config = ran
    bundle = workspace.bundle_dir(root, config.experiment)
    table = workspace.read_json(workspace.stage_dir(root, config.experiment, "export") / "export_table.json")
    fits = json.loads((bundle / "fit.json").read_text())
    assert set(fits) == {"cortex_m4", "raspberry_pi"}
    m4 = fits["cortex_m4"]
    chosen = m4["chosen"]
    assert chosen and m4["variants"][chosen]["fits"] and m4["variants"][chosen]["ram_bytes"] <= 256 * 1024
    variant = table["variants"][chosen]
    assert variant["tflm_arena_bytes"] > 0 and variant["tflm_top1_agreement"] >= 0.95
    assert variant["macs"] > 0 and variant["params"] > 0
    flatbuffer = (workspace.stage_dir(root, config.experiment, "export") / f"{chosen}.tflite").read_bytes()
    source = (bundle / "cortex_m4" / "model_data.cc").read_text()
    assert parse_c_array(source) == flatbuffer
    header = (bundle / "cortex_m4" / "model_data.h").read_text()
    assert f"kTensorArenaSize = {variant['tflm_arena_bytes']};" in header
    assert (bundle / "cortex_m4" / "ops.txt").read_text().split() == micro.ops(flatbuffer)
    exported_folder = workspace.stage_dir(root, config.experiment, "export")
    assert (bundle / "raspberry_pi" / "model.tflite").read_bytes() == \
        (exported_folder / f"{fits['raspberry_pi']['chosen']}.tflite").read_bytes()
    client, runs = _runs(config)
    exported = next(run for run in runs if run.data.tags.get("stage") == "export")
    assert exported.data.tags["export.target.cortex_m4"] == chosen
    assert exported.data.metrics[f"export/{chosen}/tflm_arena_bytes"] == variant["tflm_arena_bytes"]


def test_bundle_and_stage_folders_are_readable_by_another_user(ran):
    """A bundle copied to a device or read by a service user: every file and folder the pipeline made carries
    the read (and, for folders, search) bits the process umask allows, for group and others too."""
    import os

    root, config = ran
    umask = os.umask(0)
    os.umask(umask)
    folders = [workspace.bundle_dir(root, config.experiment),
               *(workspace.stage_dir(root, config.experiment, name) for name in STAGE_NAMES)]
    checked = 0
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            wanted = (0o555 if path.is_dir() else 0o444) & ~umask
            assert path.stat().st_mode & wanted == wanted, f"{path}: mode {path.stat().st_mode & 0o777:o}"
            checked += 1
    assert checked > 50


@pytest.mark.slow
def test_the_digits_preset_trains_augmented_and_folds_its_batch_norm_into_the_int8_model(tmp_path):
    """configs/digits.yaml as shipped, shrunk to 8-px images and two epochs: the train stage runs its Affine
    augmentation, and its batch normalization leaves no op of its own in the int8 model (folded into the
    convolutions, as TFLite Micro needs)."""
    from deploy import micro
    from pipelines.core import config as config_module

    shrink = ["data.image_size=8", "model.filters=[8, 16]", "model.dense_units=16", "train.epochs=2",
              "export.representative_samples=32", "export.latency_runs=3", "export.gate_baseline_margin=-1.0",
              "export.max_accuracy_drop=1.0", "runtime.verbose=0", f"runtime.root={tmp_path}"]
    preset = str(REPO / "configs" / "digits.yaml")
    for name in ("clean", "split", "train", "export"):
        assert cli.main([name, "--config", preset, *[item for setting in shrink for item in ("--set", setting)]]) == 0
    config = config_module.load(preset, shrink)
    assert config.model.batch_norm and [spec["name"] for spec in config.augment.transforms] == ["Affine"]
    _, runs = _runs(config)
    train = [run for run in runs if run.data.tags.get("stage") == "train"]
    assert [run.data.tags["augmentation"] for run in train] == ["Affine"]
    ops = micro.ops((workspace.stage_dir(tmp_path, "digits", "export") / "int8.tflite").read_bytes())
    assert "CONV_2D" in ops and not {"MUL", "ADD"} & set(ops), ops
