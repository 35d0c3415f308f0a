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


# Config values refused at load, before any work: each case one exact line naming the key (exit 2), nothing written.
CONFIG_CASES = [
    ("nope=1", "nope: unknown key (known: experiment, data, clean, split, health, normalize, model, train, transfer, "
     "augment, search, export, evaluate, gan, sr, denoise, segment, runtime)"),
    ("model.dropout=0.5", "model.dropout: unknown key (did you mean 'dropout_rate'?)"),
    ("train.epochs=0", "train.epochs: must be >= 1, got 0"),
    ("train.epochs=abc", "train.epochs: must be an integer, got 'abc'"),
    ("train.epochs=2.5", "train.epochs: must be an integer, got 2.5"),
    ("train.learning_rate=-1", "train.learning_rate: must be > 0, got -1.0"),
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("train.optimizer=lbfgs", "train.optimizer: must be one of ['adam', 'sgd', 'rmsprop', 'adagrad'], got 'lbfgs'"),
    ("train.objective=speed", "train.objective: must be one of ['auto', 'accuracy', 'balanced_accuracy', 'f1', "
     "'recall', 'specificity', 'ppv', 'npv', 'roc_auc', 'pr_auc', 'mae', 'rmse', 'mape'], got 'speed'"),
    ("train.threshold=maybe", "train.threshold: must be one of ['argmax', 'tuned'], got 'maybe'"),
    ("train.floors={sensitivity: 2}", "train.floors: ['sensitivity'] are not decision metrics (choose from "
     "['accuracy', 'balanced_accuracy', 'f1', 'recall', 'specificity', 'ppv', 'npv'])"),
    ("model.architecture=vit", "model.architecture: must be one of ['small_cnn', 'resnet', 'mlp', 'transfer', "
     "'cnn1d', 'recurrent', 'autoencoder1d'], got 'vit'"),
    ("model.filters=[]", "model.filters: must not be empty"),
    ("model.l2=-1", "model.l2: must be >= 0, got -1.0"),
    ("model.backbone.kind=torch", "model.backbone.kind: must be one of ['project_autoencoder', "
     "'project_source_task', 'hub', 'applications'], got 'torch'"),
    ("model.backbone.source_val_fraction=1", "model.backbone.source_val_fraction: must be < 1, got 1.0"),
    ("split.val_fraction=1.5", "split.val_fraction: must be < 1, got 1.5"),
    ("split.test_fraction=0", "split.test_fraction: must be > 0, got 0.0"),
    ("split.strategy=weird", "split.strategy: must be one of ['stratified', 'random', 'temporal', 'predefined'], "
     "got 'weird'"),
    ("data.source=ftp", "data.source: must be one of ['digits', 'image_folder', 'breast_cancer', 'wine', "
     "'diabetes', 'csv', 'basic_motions', 'internal_bleeding', 'sensor_csv'], got 'ftp'"),
    ("data.channels=2", "data.channels: must be one of [1, 3], got 2"),
    ("data.image_size=[0, 8]", "data.image_size: must be an integer, got [0, 8]"),
    ("data.target=", "data.target: must be a string, got None"),
    ("data.near_duplicate_tolerance=-1", "data.near_duplicate_tolerance: must be > 0, got -1.0"),
    ("experiment=a/b", "experiment: must be a plain name (letters, digits, '-', '_', '.'; not starting with '.'), "
     "got 'a/b'"),
    ("experiment=", "experiment: must be a string, got None"),
    ("export.variants=[int4]", "export.variants: must be one of ['float32', 'dynamic_range', 'float16', 'int8', "
     "'qat_int8', 'pruned_int8', 'pqat_int8', 'clustered_int8'], got 'int4'"),
    ("export.targets=[nano33]", "export.targets[0]: unknown target 'nano33' (presets: cortex_m4, cortex_m7, "
     "esp32_s3, raspberry_pi; or a mapping with name, ram_bytes, flash_bytes, runtime)"),
    ("export.max_accuracy_drop=-0.1", "export.max_accuracy_drop: must be >= 0, got -0.1"),
    ("export.optimize_batch_size=0", "export.optimize_batch_size: must be >= 1, got 0"),
    ("evaluate.confidence=1.5", "evaluate.confidence: must be < 1, got 1.5"),
    ("search.space={train.learning_rate: {kind: log_uniform, low: 0, high: 1}}",
     "search.space.train.learning_rate.low: must be > 0 for kind 'log_uniform', got 0"),
    ("search.space={nope.x: {kind: uniform, low: 0, high: 1}}", "search.space.nope.x: unknown key (not a config "
     "field)"),
    ("search.space={train.optimizer: {kind: choice, values: [adam, 3]}}",
     "search.space.train.optimizer.values[1]: train.optimizer: must be a string, got 3"),
    ("search.space={train.optimizer: {kind: choice, values: [adam, lbfgs]}}",
     "search.space.train.optimizer.values[1]: train.optimizer: must be one of ['adam', 'sgd', 'rmsprop', "
     "'adagrad'], got 'lbfgs'"),
    ("augment.transforms=[{name: HorizontalFlip}, {name: Twirl}]",
     "augment.transforms[1]: albumentations has no transform 'Twirl'"),
    ("runtime.strategy=tpu", "runtime.strategy: must be one of ['default', 'mirrored', 'multi_worker'], got 'tpu'"),
    ("runtime.in_memory_mb=-5", "runtime.in_memory_mb: must be >= 0, got -5.0"),
    ("gan.epochs=0", "gan.epochs: must be >= 1, got 0"),
    ("sr.patch_size=15", "sr.patch_size: must be even (x2 super-resolution), got 15"),
    ("segment.num_classes=1", "segment.num_classes: must be >= 2, got 1"),
]


@pytest.mark.parametrize(("setting", "expected"), CONFIG_CASES, ids=[case[0][:40] for case in CONFIG_CASES])
def test_a_bad_config_value_is_one_line_naming_its_key(tmp_path, capsys, setting, expected):
    line = _one_line(capsys, 2, ["clean", "--set", f"runtime.root={tmp_path}", "--set", setting])
    assert line == f"config error: defaults: {expected}"
    assert not (tmp_path / "data").exists() and not (tmp_path / "mlruns").exists()


def test_a_config_file_that_is_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "latin.yaml"
    path.write_bytes("experiment: caf\xe9\n".encode("latin-1"))
    line = _one_line(capsys, 2, ["clean", "--config", str(path)])
    assert line == f"config error: {path}: not UTF-8 text (byte 0xe9 at offset 15); save it as UTF-8"


def _csv(tmp_path, frame, encoding="utf-8"):
    frame.to_csv(tmp_path / "rows.csv", index=False, encoding=encoding)
    return ["--set", f"runtime.root={tmp_path}", "--set", "data.source=csv", "--set", "data.path=rows.csv",
            "--set", "data.target=label", "--set", "model.architecture=mlp"]


ROWS = "".join(f"{index},{'ab'[index % 2]}\n" for index in range(10))
CSV_CASES = [
    ("", "empty CSV file"),
    ("x,label\n", "no data rows, only the header"),
    ("x,y\n1,2\n3,4\n", "no column 'label' (columns: x, y)"),
    ("x,label\n" + "".join(f"{index},a\n" for index in range(20)), "target column 'label' has a single class ('a',)"),
    ("x,label\n1,a\n2,b,extra\n3,a\n", "line 3 has 3 fields, the header has 2 (data.bad_lines: skip sets such "
     "lines aside)"),
    ("x,x,label\n1,2,a\n3,4,b\n", "column name(s) ['x'] appear more than once in the header"),
    ("\x00\x01garbage,label\n1,a\n", "not a text CSV file (it holds NUL bytes)"),
    ("x,label\n" + ROWS + "5,\n", "target column 'label' is missing in rows [12]"),
    # a quoted cell over three lines: the rows after it are named by the line they start on
    ('x,note,label\n1,"three\nline\nnote",a\n' + ROWS.replace("\n", ",n\n").replace(",a,n", ",n,a")
     .replace(",b,n", ",n,b") + "5,n,\n", "target column 'label' is missing in rows [15]"),
]


@pytest.mark.parametrize(("text", "expected"), CSV_CASES, ids=[case[1][:30] for case in CSV_CASES])
def test_a_bad_csv_is_one_line_naming_the_file_and_row(tmp_path, capsys, text, expected):
    settings = _csv(tmp_path, pd.DataFrame())
    (tmp_path / "rows.csv").write_text(text)
    line = _one_line(capsys, 1, ["clean", *settings])
    assert line == f"error: {tmp_path / 'rows.csv'}: {expected}"
    assert not list((tmp_path / "data").rglob("manifest.json"))


def test_a_missing_csv_is_named(tmp_path, capsys):
    settings = _csv(tmp_path, pd.DataFrame())
    line = _one_line(capsys, 1, ["analyze", *settings, "--set", "data.path=missing.csv"])
    assert line == f"error: {tmp_path / 'missing.csv'}: CSV file not found"


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


@pytest.mark.parametrize(("classes", "expected"), [
    ({"a": 3}, "image folder {folder}: 1 class(es) with readable items (a); classification needs at least two"),
    ({"a": 3, "b": 0}, "image folder {folder}: 1 class(es) with readable items (a); classification needs at least "
     "two"),
    (None, "{folder}: image folder not found"),
])
def test_an_image_folder_without_two_classes_is_one_line(tmp_path, capsys, classes, expected):
    from PIL import Image

    for name, count in (classes or {}).items():
        (tmp_path / "images" / name).mkdir(parents=True)
        for index in range(count):
            Image.new("L", (8, 8), index * 40).save(tmp_path / "images" / name / f"{index}.png")
    line = _one_line(capsys, 1, ["clean", "--set", f"runtime.root={tmp_path}", "--set", "data.source=image_folder",
                                 "--set", "data.path=images", "--set", "data.image_size=8"])
    assert line == "error: " + expected.format(folder=tmp_path / "images")
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").rglob("manifest.json"))


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
    from tests.conftest import TINY, default_sigint, stage_command, tiny_config

    config = tiny_config(tmp_path, "train.epochs=200", "train.patience=200")
    clean.run(config)
    split.run(config)
    command = stage_command("train", [*TINY, f"runtime.root={tmp_path}", "train.epochs=200", "train.patience=200"])
    backup_root = workspace.stage_dir(tmp_path, config.experiment, "train").parent / ".backup"
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             preexec_fn=default_sigint)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list(backup_root.rglob("checkpoint")):
        time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("INFO:", "WARNING:", "I0000"))]
    assert lines[-1] == "interrupted; rerun resumes (train: a stage's unfinished outputs were discarded)"
    assert "Traceback" not in err
    assert not (workspace.stage_dir(tmp_path, config.experiment, "train") / "manifest.json").exists()


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test, as in a terminal (a test run started in the background, `cmd &` in
    a script, inherits SIGINT ignored), and whatever was there before afterwards."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_error_raised_while_unwinding_from_ctrl_c_is_still_an_interrupt(tmp_path, monkeypatch, capsys,
                                                                          python_sigint):
    import os
    import signal
    import time
    import types

    from pipelines import __main__ as cli
    from pipelines.stages import BY_NAME

    def interrupted_then_failed(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("a library's cleanup failed")  # noqa: B904  (what a library does under Ctrl-C)

    monkeypatch.setitem(BY_NAME, "clean", types.SimpleNamespace(run=interrupted_then_failed))
    assert cli.main(["clean", "--set", f"runtime.root={tmp_path}"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("interrupted; rerun resumes (clean:")

    def interrupt_swallowed(*args, **kwargs):  # as TensorFlow does to a Ctrl-C in a Python callback it runs
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            pass
        raise RuntimeError("CancelledError: the library's own")  # no KeyboardInterrupt in its chain

    monkeypatch.setitem(BY_NAME, "clean", types.SimpleNamespace(run=interrupt_swallowed))
    assert cli.main(["clean", "--set", f"runtime.root={tmp_path}"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("interrupted; rerun resumes (clean:")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back

    def failed(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setitem(BY_NAME, "clean", types.SimpleNamespace(run=failed))
    assert cli.main(["clean", "--set", f"runtime.root={tmp_path}"]) == 1  # a plain error stays an error
    assert "unexpected error: RuntimeError: a bug" in capsys.readouterr().err


def test_ctrl_c_while_the_libraries_load_is_one_line_and_exit_130(tmp_path):
    import signal
    import subprocess
    import time

    from tests.conftest import default_sigint, stage_command

    child = subprocess.Popen(stage_command("clean", [f"runtime.root={tmp_path}"]), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    time.sleep(1.0)  # Python is up; TensorFlow and MLflow are still importing
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("INFO:", "WARNING:", "I0000",
                                                                                          "E0000"))]
    assert lines[-1].startswith("interrupted")


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
    assert done.returncode == 1 and lines == [
        "MLflow error: cannot reach the tracking server http://127.0.0.1:1 (connection refused, after 2 quick "
        "retries); start it (make server) or point MLFLOW_TRACKING_URI at a running one (rerun with --debug for the "
        "traceback)"]
    # MLflow's own retries take about four minutes; ours about 9 s on an idle machine, start-up included. The
    # bound only tells the two apart: a loaded CI machine once took 17 s.
    assert elapsed < 90


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


def _own_store_environment() -> dict:
    """This environment without MLFLOW_TRACKING_URI, which an earlier test's `mlflow.set_tracking_uri` wrote into
    it: a child process must use the store of its own runtime.root."""
    import os

    return {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}


def _cli_lines(tmp_path, *argv, env=None):
    """A CLI run in its own process: (exit code, stderr lines without TensorFlow's start-up chatter)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    # from tmp_path: MLflow makes the folders of a `sqlite:///file:...` URI relative to the working directory
    done = subprocess.run([sys.executable, "-m", "pipelines", *argv, "--set", f"runtime.root={tmp_path}"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**_own_store_environment(), "PYTHONPATH": str(REPO), **(env or {})})
    noise = ("I0000", "E0000", "W0000", "WARNING: All log messages", "INFO:")
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip() and not line.startswith(noise)]


@pytest.mark.slow
def test_a_read_only_store_is_named_in_one_line(tmp_path):
    from pipelines.core import workspace

    code, _ = _cli_lines(tmp_path, "analyze")
    assert code == 0
    database = tmp_path / "mlruns" / "mlflow.db"
    code, lines = _cli_lines(tmp_path, "clean", env={"MLFLOW_TRACKING_URI": f"sqlite:///file:{database}?mode=ro&uri=true"})
    assert code == 1 and len(lines) == 1, lines
    assert lines[0] == (f"MLflow error: the tracking store sqlite:///file:{database}?mode=ro&uri=true is read-only for "
                        "this user ((sqlite3.OperationalError) attempt to write a readonly database); give write "
                        "access to its folder, or point MLFLOW_TRACKING_URI at a store you can write (rerun with "
                        "--debug for the traceback)")
    assert not workspace.stage_dir(tmp_path, "digits", "clean").exists()


def test_experiments_started_at_once_on_a_new_store_all_start(tmp_path):
    """MLflow creates the SQLite schema on first use; four processes at once raced on it (three of four failed
    with 'table ... already exists' or 'duplicate column name' before tracking.configure took a lock)."""
    import subprocess
    import sys

    script = ("import sys\nfrom pipelines.core import config, tracking\n"
              "print(tracking.configure(config.load(None, sys.argv[1:])))")
    children = [subprocess.Popen([sys.executable, "-c", script, f"runtime.root={tmp_path}", f"experiment=e{index}"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=_own_store_environment()) for index in range(4)]
    results = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0] * 4, [err[-500:] for _, err in results]
    assert sorted(out.strip().splitlines()[-1] for out, _ in results) == ["1", "2", "3", "4"]
