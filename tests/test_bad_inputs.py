"""Bad input stops with one line that names the key, file, row or class, and writes nothing."""

import pandas as pd
import pytest

from pipelines import __main__ as cli
from pipelines.core import config as config_module


def _one_line(capsys, code, argv):
    assert cli.main(argv) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(("setting", "expected"), [
    ("train.epochs=[", "--set 'train.epochs=[': the value is not a plain YAML value (while parsing"),
    ('train=!!python/object/apply:os.system ["touch x"]', "--set 'train=!!python/object/apply:os.system "
     "[\"touch x\"]': the value is not a plain YAML value (could not determine a constructor"),
    (f"experiment={'e' * 300}", "experiment: must be at most 100 characters, got 300"),
    ("export.targets=[{name: '..', ram_bytes: 1000, flash_bytes: 1000, runtime: tflm}]",
     "name '..': letters, digits, '_', '.', '-' only, not starting with '.'"),
])
def test_bad_settings_stop_with_one_line_naming_the_key(tmp_path, capsys, setting, expected):
    line = _one_line(capsys, 2, ["clean", "--set", f"runtime.root={tmp_path}", "--set", setting])
    assert line.startswith("config error: ") and expected in line
    assert not (tmp_path / "data").exists() and not (tmp_path / "x").exists()


def test_a_config_file_that_is_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "latin.yaml"
    path.write_bytes("experiment: caf\xe9\n".encode("latin-1"))
    line = _one_line(capsys, 2, ["clean", "--config", str(path)])
    assert line == f"config error: {path}: not UTF-8 text (byte 0xe9 at offset 15); save it as UTF-8"


def _csv(tmp_path, frame, encoding="utf-8"):
    frame.to_csv(tmp_path / "rows.csv", index=False, encoding=encoding)
    return ["--set", f"runtime.root={tmp_path}", "--set", "data.source=csv", "--set", "data.path=rows.csv",
            "--set", "data.target=label", "--set", "model.architecture=mlp"]


def test_a_latin1_csv_is_named(tmp_path, capsys):
    settings = _csv(tmp_path, pd.DataFrame({"place": ["café", "bar"] * 10, "label": ["a", "b"] * 10}), "latin-1")
    line = _one_line(capsys, 1, ["analyze", *settings])
    assert line.startswith(f"error: {tmp_path / 'rows.csv'}: not UTF-8 text (byte 0xe9 at offset ")
    assert not list((tmp_path / "data").rglob("report.json"))


def test_a_class_with_a_single_row_is_named_before_splitting(tmp_path, capsys):
    frame = pd.DataFrame({"x": range(21), "label": ["a", "b"] * 10 + ["lonely"]})
    settings = _csv(tmp_path, frame)
    assert cli.main(["clean", *settings]) == 0
    capsys.readouterr()
    line = _one_line(capsys, 1, ["split", *settings])
    assert line == ("error: split: class(es) with a single item cannot be stratified: 'lonely' (row-22); add items, "
                    "leave the class out (data.classes), or set split.strategy: random")
    assert not list((tmp_path / "data").rglob("split_manifest.json"))
    config_module.load(None, [f"runtime.root={tmp_path}"])  # nothing else broke


@pytest.mark.parametrize(("text", "expected"), [
    ("train:\n  epochs: 3\n  epochs: 4\n", "key 'epochs' is given twice"),
    ("a: &x [1, 2]\ntrain:\n  epochs: *x\n", "aliases (*name) are not allowed in a config"),
    ("train:\n  learning_rate: .inf\n", "train.learning_rate: must be a finite number, got inf"),
])
def test_duplicate_keys_aliases_and_infinite_numbers_are_refused(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = _one_line(capsys, 2, ["clean", "--config", str(path)])
    assert line.startswith(f"config error: {path}: ") and expected in line


def test_a_class_name_with_a_newline_is_refused_and_c_strings_are_escaped(tmp_path, capsys):
    from PIL import Image

    from deploy import micro

    for name in ("good", "bad\nname"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(3):
            Image.new("L", (8, 8), index * 40).save(tmp_path / "images" / name / f"{index}.png")
    line = _one_line(capsys, 1, ["analyze", "--set", f"runtime.root={tmp_path}", "--set", "data.source=image_folder",
                                 "--set", "data.path=images"])
    assert line == (f"error: {tmp_path / 'images'}: class folder 'bad\\nname': a class name may not hold a control "
                    "character (newline, tab, ...); rename it")
    assert micro.c_string('say "hi"\\\n?') == '"say \\"hi\\"\\\\\\012\\077"'


def test_a_link_out_of_the_image_folder_is_refused(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "images" / "a").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "elsewhere.png")
    (tmp_path / "images" / "a" / "link.png").symlink_to(tmp_path / "elsewhere.png")
    line = _one_line(capsys, 1, ["analyze", "--set", f"runtime.root={tmp_path}", "--set", "data.source=image_folder",
                                 "--set", "data.path=images"])
    assert line.startswith(f"error: {tmp_path / 'images' / 'a' / 'link.png'}: a link to {tmp_path / 'elsewhere.png'}, "
                           "outside the image folder")


def test_rows_that_differ_only_in_their_time_column_are_not_duplicates(tmp_path):
    from pipelines.stages import clean

    frame = pd.DataFrame({"x": [1.0, 1.0, 2.0, 3.0] * 5, "day": range(20), "label": ["a", "a", "b", "b"] * 5})
    frame.to_csv(tmp_path / "rows.csv", index=False)
    config = config_module.load(None, [f"runtime.root={tmp_path}", "data.source=csv", "data.path=rows.csv",
                                       "data.target=label", "data.time_column=day", "split.strategy=temporal",
                                       "model.architecture=mlp"])
    result = clean.run(config)
    assert result.metrics["clean/items_out"] == 20  # visits on other days are other rows


@pytest.mark.slow
def test_ctrl_c_during_training_is_one_line_and_exit_130(tmp_path):
    import signal
    import subprocess
    import time

    from pipelines.core import workspace
    from pipelines.stages import clean, split
    from tests.conftest import TINY, stage_command, tiny_config

    config = tiny_config(tmp_path, "train.epochs=200", "train.patience=200")
    clean.run(config)
    split.run(config)
    command = stage_command("train", [*TINY, f"runtime.root={tmp_path}", "train.epochs=200", "train.patience=200"])
    backup_root = workspace.stage_dir(tmp_path, config.experiment, "train").parent / ".backup"
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(backup_root.rglob("checkpoint")):
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("INFO:", "WARNING:", "I0000"))]
    assert lines[-1] == "interrupted; rerun resumes (train: a stage's unfinished outputs were discarded)"
    assert "Traceback" not in err
    assert not (workspace.stage_dir(tmp_path, config.experiment, "train") / "manifest.json").exists()


def test_a_killed_runs_debris_and_mlflow_run_are_cleaned_even_when_the_next_run_skips(tmp_path, capsys):
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    from pipelines.core import tracking, workspace
    from pipelines.stages import clean
    from tests.conftest import tiny_config

    config = tiny_config(tmp_path)
    clean.run(config)
    folder = workspace.stage_dir(tmp_path, config.experiment, "clean")
    debris = folder.parent / ".clean.killed.tmp"
    debris.mkdir()
    (debris / "half.npy").write_bytes(b"x" * 1000)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    client = MlflowClient()
    left = client.create_run(tracking.configure(config), tags={"stage": "clean", "pid": dead.stdout.strip(),
                                                               "host": __import__("socket").gethostname()})
    capsys.readouterr()
    result = clean.run(config)
    assert result.skipped and not debris.exists()
    assert client.get_run(left.info.run_id).info.status == "KILLED"
    assert "[clean] removed the unfinished outputs of a killed run" in capsys.readouterr().out


@pytest.mark.slow
def test_an_unreachable_tracking_server_is_named_in_one_line_quickly(tmp_path):
    import os
    import subprocess
    import sys
    import time

    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_HTTP_REQUEST")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipelines", "clean", "--set", f"runtime.root={tmp_path}"],
                          capture_output=True, text=True, timeout=300,
                          env={**environment, "MLFLOW_TRACKING_URI": "http://127.0.0.1:1"})
    elapsed = time.monotonic() - started
    lines = [line for line in done.stderr.splitlines() if line.startswith(("MLflow error", "error", "unexpected"))]
    assert done.returncode == 1 and len(lines) == 1 and "127.0.0.1" in lines[0] and "refused" in lines[0]
    assert elapsed < 60  # MLflow's own retries took about four minutes


def test_a_full_disk_is_one_line_naming_the_workspace_and_nothing_half_written_stays(tmp_path, capsys, monkeypatch):
    import errno

    from pipelines.core import workspace

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(workspace, "save_arrays", full)
    line = _one_line(capsys, 1, ["clean", "--set", f"runtime.root={tmp_path}", "--set", "data.image_size=8"])
    assert line == (f"error: no space left on device writing under {tmp_path} (clean: nothing half-written was "
                    "kept; the previous outputs stand)")
    stage_parent = workspace.stage_dir(tmp_path, "digits", "clean").parent
    assert not list(stage_parent.glob(".clean.*")) and not (stage_parent / "clean").exists()
