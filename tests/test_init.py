"""`python -m pipelines init DATA` (make init): tells images, a table and sensor recordings apart, writes a config
that the project's loader reads and whose data the sources read, asks for the one field it cannot tell, and
the config it writes runs the pipeline end to end."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipelines import __main__ as cli
from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.data import propose
from pipelines.stages import pipeline
from tests.conftest import REPO

# a few steps of a tiny model: the end-to-end runs check that the written config works, not the scores
TINY = ["model.filters=[8]", "model.dense_units=16", "train.epochs=2", "train.patience=2", "search.n_trials=1",
        "search.epochs=1", "search.grid_points=0", "export.variants=[float32]", "export.representative_samples=16",
        "export.latency_runs=2", "export.micro_samples=8", "export.gate_baseline_margin=-1.0",
        "export.gate_majority_margin=-1.0", "evaluate.bootstrap_resamples=20", "runtime.verbose=0"]


def _images(folder, size=(24, 20), colour=True, count=12, classes=("circle", "square", "triangle")):
    """`count` PNG files of random pixels per class sub-folder, each class tinted its own channel."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            if colour:
                pixels = np.zeros((size[1], size[0], 3), np.uint8)
                pixels[..., label % 3] = rng.integers(60, 255, (size[1], size[0]))
            else:
                pixels = rng.integers(0, 80, (size[1], size[0])).astype(np.uint8) + 60 * label
            Image.fromarray(pixels).save(folder / name / f"{name}{index:02d}.png")
    return folder


def _table(path, target="label", rows=120, dates=False):
    """A CSV of customers: a repeating customer_id, two numbers, a category and a two-class target."""
    rng = np.random.default_rng(1)
    income = rng.normal(50, 10, rows).round(2)
    frame = pd.DataFrame({"customer_id": rng.integers(0, 30, rows), "age": rng.integers(18, 80, rows),
                          "income": income, "plan": rng.choice(["basic", "plus"], rows),
                          target: np.where(income + rng.normal(0, 3, rows) > 50, "yes", "no")})
    if dates:
        frame.insert(1, "signup_date", pd.date_range("2024-01-01", periods=rows, freq="D").strftime("%Y-%m-%d"))
    frame.to_csv(path, index=False)
    return path


def _recordings(folder, count=12, length=120, rate=20.0, time=True):
    """`count` CSV recordings of two channels (a sine whose frequency is the class), a subject id and a label."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for index in range(count):
        label = ("slow", "fast")[index % 2]
        seconds = np.arange(length) / rate
        wave = 2 * np.pi * (1.0 if label == "slow" else 3.0) * seconds
        frame = pd.DataFrame({"t": seconds, "ax": np.sin(wave) + rng.normal(0, 0.1, length), "ay": np.cos(wave),
                              "subject": index // 4, "activity": label})
        frame.drop(columns=[] if time else ["t"]).to_csv(folder / f"rec{index:02d}.csv", index=False)
    return folder


def _init(monkeypatch, tmp_path, *argv):
    monkeypatch.chdir(tmp_path)
    return cli.main(["init", *map(str, argv)])


def _read(tmp_path, data, name):
    """The written config as the pipeline loads it, and its data as the sources read it."""
    from pipelines.data import sources

    config = config_module.load(tmp_path / "configs" / f"{name}.yaml", [f"runtime.root={tmp_path}"])
    return config, sources.load(config.data, config.root)


def test_an_image_folder_becomes_an_image_folder_config(tmp_path, monkeypatch, capsys):
    _images(tmp_path / "shapes")
    assert _init(monkeypatch, tmp_path, "shapes") == 0
    out = capsys.readouterr().out
    assert "3 classes (circle 12, square 12, triangle 12 files)" in out
    assert out.strip().splitlines()[-1] == "next: make pipeline CONFIG=configs/shapes.yaml"
    config, raw = _read(tmp_path, "shapes", "shapes")
    assert config.experiment == "shapes"  # no experiment key: the file's stem names it
    assert (config.data.source, config.data.path, config.data.image_size, config.data.channels) == \
        ("image_folder", "shapes", 16, 3)  # 24x20 px: the largest side on offer that needs no upscaling
    assert config.normalize.scope == "per_channel" and config.model.architecture == "small_cnn"
    assert raw.class_names == ("circle", "square", "triangle") and len(raw.labels) == 36
    text = (tmp_path / "configs" / "shapes.yaml").read_text()
    assert "experiment:" not in text and "  # the images are mostly 24x20 px" in text  # each choice says why


def test_grey_images_get_one_channel_and_empty_class_folders_are_left_out(tmp_path, monkeypatch):
    _images(tmp_path / "digits in grey", size=(40, 36), colour=False, count=4, classes=("a", "b"))
    (tmp_path / "digits in grey" / "c").mkdir()
    assert _init(monkeypatch, tmp_path, "digits in grey") == 0
    config, raw = _read(tmp_path, "digits in grey", "digits_in_grey")
    assert (config.data.image_size, config.data.channels, config.data.classes) == (32, 1, ("a", "b"))
    assert raw.class_names == ("a", "b")


def test_a_csv_becomes_a_table_config_with_its_target_and_group(tmp_path, monkeypatch):
    _table(tmp_path / "customers.csv")
    assert _init(monkeypatch, tmp_path, "customers.csv") == 0
    config, raw = _read(tmp_path, "customers.csv", "customers")
    data = config.data
    assert (data.source, data.path, data.target, data.task) == ("csv", "customers.csv", "label", "classification")
    assert (data.group_column, config.split.group, config.split.strategy) == ("customer_id", "column", "stratified")
    assert config.model.architecture == "mlp"
    assert raw.class_names == ("no", "yes") and "customer_id" not in raw.features.columns


def test_a_dated_table_is_split_in_time(tmp_path, monkeypatch):
    _table(tmp_path / "signups.csv", dates=True)
    assert _init(monkeypatch, tmp_path, "signups.csv") == 0
    config, raw = _read(tmp_path, "signups.csv", "signups")
    assert (config.data.time_column, config.split.strategy) == ("signup_date", "temporal")
    assert raw.times is not None


def test_a_table_without_a_telling_target_asks_for_it_by_name(tmp_path, monkeypatch, capsys):
    _table(tmp_path / "churn.csv", target="churned")
    assert _init(monkeypatch, tmp_path, "churn.csv") == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: churn.csv: cannot tell the target column")
    assert "--target COLUMN" in lines[0] and "churned" in lines[0]
    assert not (tmp_path / "configs" / "churn.yaml").exists()
    assert _init(monkeypatch, tmp_path, "churn.csv", "--target", "churned") == 0
    assert _read(tmp_path, "churn.csv", "churn")[0].data.target == "churned"


def test_a_folder_of_recordings_becomes_a_sensor_config(tmp_path, monkeypatch):
    _recordings(tmp_path / "walks")
    assert _init(monkeypatch, tmp_path, "walks") == 0
    config, raw = _read(tmp_path, "walks", "walks")
    data = config.data
    assert (data.source, data.target, data.signal_channels, data.time_column) == \
        ("sensor_csv", "activity", ("ax", "ay"), "t")  # subject: constant within each recording, left out
    assert (data.window, data.stride, config.model.architecture) == (40, 20, "cnn1d")  # 2 s at 20 Hz
    assert raw.class_names == ("fast", "slow") and raw.sampling_rate_hz == pytest.approx(20.0)


def test_recordings_without_a_time_column_ask_for_the_rate(tmp_path, monkeypatch, capsys):
    _recordings(tmp_path / "taps", time=False, length=64)
    assert _init(monkeypatch, tmp_path, "taps") == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--sampling-rate HZ" in lines[0]
    assert _init(monkeypatch, tmp_path, "taps", "--sampling-rate", "50") == 0
    config, raw = _read(tmp_path, "taps", "taps")
    assert (config.data.sampling_rate, config.data.time_column, config.data.window) == (50.0, "", 32)
    assert raw.sampling_rate_hz == 50.0


def test_an_existing_config_is_kept_unless_forced(tmp_path, monkeypatch, capsys):
    _table(tmp_path / "customers.csv")
    (tmp_path / "configs").mkdir()
    mine = tmp_path / "configs" / "customers.yaml"
    mine.write_text("data: {source: csv, path: customers.csv, target: age}\n")
    assert _init(monkeypatch, tmp_path, "customers.csv") == 1
    assert "exists" in capsys.readouterr().err and "target: age" in mine.read_text()
    assert _init(monkeypatch, tmp_path, "customers.csv", "--force") == 0
    assert "target: label" in mine.read_text()
    assert _init(monkeypatch, tmp_path, "customers.csv", "--name", "other") == 0
    assert config_module.load(tmp_path / "configs" / "other.yaml").experiment == "other"


def _note(folder):
    (folder / "notes.txt").write_text("x")
    return "notes.txt"


def _one_image(folder):
    Image.new("L", (8, 8)).save(folder / "one.png")
    return "one.png"


@pytest.mark.parametrize("make, message", [(_note, "notes.txt: not a CSV file"),
                                           (_one_image, "one.png: a single image"),
                                           (lambda folder: "missing", "missing: not found")])
def test_what_is_no_data_is_named_in_one_line(tmp_path, monkeypatch, capsys, make, message):
    assert _init(monkeypatch, tmp_path, make(tmp_path)) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_init_runs_from_any_folder_without_tensorflow_and_make_passes_data_and_name(tmp_path):
    _images(tmp_path / "data" / "pets", count=3, classes=("cat", "dog"))
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    script = ("import sys; from pipelines.__main__ import main; code = main(sys.argv[1:]); "
              "assert 'tensorflow' not in sys.modules, 'init imported tensorflow'; sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script, "init", str(tmp_path / "data" / "pets")], cwd=elsewhere,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    config = config_module.load(elsewhere / "configs" / "pets.yaml")
    assert config.data.path == str(tmp_path / "data" / "pets")  # outside the folder it ran from: absolute
    assert propose.IMAGE_SUFFIXES == __import__("pipelines.data.sources").data.sources.IMAGE_SUFFIXES
    dry = subprocess.run(["make", "--no-print-directory", "-n", "-o", "setup", "init", "DATA=data/raw/pets",
                          "NAME=pets", f"PYTHON={sys.executable}"], cwd=REPO, capture_output=True, text=True)
    assert '-m pipelines init "data/raw/pets" --name "pets"' in dry.stdout
    usage = subprocess.run(["make", "--no-print-directory", "-o", "setup", "init", f"PYTHON={sys.executable}"],
                           cwd=REPO, capture_output=True, text=True)
    assert usage.returncode != 0 and "usage: make init DATA=" in usage.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["images", "table", "recordings"])
def test_the_written_config_runs_the_pipeline_end_to_end(tmp_path, monkeypatch, kind):
    data = {"images": lambda: _images(tmp_path / "shapes"), "table": lambda: _table(tmp_path / "customers.csv"),
            "recordings": lambda: _recordings(tmp_path / "walks")}[kind]()
    assert _init(monkeypatch, tmp_path, data.name) == 0
    written = tmp_path / "configs" / f"{propose.default_name(data)}.yaml"
    settings = [item for setting in [*TINY, f"runtime.root={tmp_path}"] for item in ("--set", setting)]
    assert cli.main(["all", "--config", str(written), *settings]) == 0
    experiment = config_module.load(written).experiment
    for stage in pipeline():
        assert workspace.read_manifest(workspace.stage_dir(tmp_path, experiment, stage.name)) is not None, stage
    assert (workspace.bundle_dir(tmp_path, experiment) / "model.tflite").is_file()
