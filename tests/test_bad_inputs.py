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
