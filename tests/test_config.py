import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest

from pipelines import __main__ as cli
from pipelines.core import config as config_module
from pipelines.core.config import ConfigError
from pipelines.stages import BY_NAME


@pytest.mark.parametrize("path", sorted(Path("configs").glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_config_is_valid(path):
    config = config_module.load(path)
    assert config.experiment and config_module.from_dict(config_module.to_dict(config)) == config


def test_defaults_and_shipped_config_load():
    defaults = config_module.load()
    digits = config_module.load("configs/digits.yaml")
    assert defaults.train.learning_rate == pytest.approx(1e-3)
    assert digits.experiment == "digits"
    assert digits.search.space["train.learning_rate"].kind == "log_uniform"
    assert digits.export.variants == ("float32", "int8")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trian": {}}, "trian: unknown key (did you mean 'train'?)"),
        ({"train": {"learnig_rate": 0.1}}, "train.learnig_rate: unknown key (did you mean 'learning_rate'?)"),
        ({"train": {"learning_rate": -1}}, "train.learning_rate: must be > 0, got -1"),
        ({"train": {"epochs": "ten"}}, "train.epochs: must be an integer, got 'ten'"),
        ({"train": {"epochs": 2.5}}, "train.epochs: must be an integer, got 2.5"),
        ({"model": {"architecture": "vgg"}},
         "model.architecture: must be one of ['small_cnn', 'resnet', 'mlp', 'transfer', 'cnn1d', 'recurrent', "
         "'autoencoder1d'], got 'vgg'"),
        ({"model": {"dropout_rate": 1.0}}, "model.dropout_rate: must be < 1, got 1.0"),
        ({"clean": {"drop_exact_duplicates": "yes"}}, "clean.drop_exact_duplicates: must be true or false"),
        ({"split": {"val_fraction": 0.5, "test_fraction": 0.45}}, "split: val_fraction + test_fraction must be"),
        ({"search": {"space": {"train.nope": {"kind": "uniform"}}}}, "search.space.train.nope: unknown key"),
        ({"search": {"space": {"train.learning_rate": {"kind": "log_uniform", "low": 0, "high": 1}}}},
         "search.space.train.learning_rate.low: must be > 0 for kind 'log_uniform'"),
        ({"search": {"space": {"train.learning_rate": {"kind": "gauss"}}}},
         "search.space.train.learning_rate.kind: must be one of"),
        ({"export": {"variants": ["float32", "int4"]}}, "export.variants: must be one of"),
        ({"data": 3}, "data: must be a mapping, got 3"),
        ({"gan": {"jit_compile": "yes"}}, "gan.jit_compile: must be true, false or auto, got 'yes'"),
        ({"gan": {"jit_compile": 1}}, "gan.jit_compile: must be true, false or auto, got 1"),
        ({"experiment": "../../etc"}, "experiment: must be a plain name (letters, digits, '-', '_', '.'"),
        ({"experiment": ".hidden"}, "experiment: must be a plain name"),
    ],
)
def test_bad_values_name_the_key_and_rule(values, message):
    with pytest.raises(ConfigError) as error:
        config_module.from_dict(values)
    assert message in str(error.value)


def test_overrides_are_parsed_as_yaml_and_validated():
    config = config_module.from_dict({}, ["train.epochs=3", "model.filters=[4, 8]", "train.learning_rate=1e-4"])
    assert (config.train.epochs, config.model.filters) == (3, (4, 8))
    assert config.train.learning_rate == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="expected key.path=value"):
        config_module.from_dict({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="train.epochs: must be >= 1, got 0"):
        config_module.from_dict({}, ["train.epochs=0"])


def test_config_is_frozen_and_replace_validates():
    config = config_module.load()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 1  # type: ignore[misc]
    assert config_module.replace_path(config, "train.epochs", 7).train.epochs == 7
    with pytest.raises(ConfigError, match="train.epochs"):
        config_module.replace_path(config, "train.epochs", -7)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        config_module.load(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=f"{listing}: top level must be a mapping"):
        config_module.load(listing)
    typo = tmp_path / "typo.yaml"
    typo.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=f"{typo}: trian: unknown key"):
        config_module.load(typo)


def test_cli_fails_before_any_work(tmp_path, capsys):
    code = cli.main(["train", "--set", f"runtime.root={tmp_path}", "--set", "train.learning_rate=-1"])
    assert code == 2
    assert "train.learning_rate: must be > 0, got -1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no folder, no MLflow store, no lock file


def test_every_stage_has_help(capsys):
    for stage in [*BY_NAME, "all"]:
        with pytest.raises(SystemExit) as done:
            cli.main([stage, "--help"])
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "--set KEY=VALUE" in text and "train.learning_rate" in text


def test_user_errors_are_one_line_and_bugs_show_their_traceback_with_debug(tmp_path, capsys, monkeypatch):
    root = f"runtime.root={tmp_path}"
    assert cli.main(["train", "--set", root]) == 1  # a stage run out of order: the user can fix it
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"error: train: no outputs of stage 'split' in .*; run 'split' first",
                                            lines[0])

    def broken(config, force=False):
        raise KeyError("a bug, not the user's doing")

    monkeypatch.setattr(importlib.import_module("pipelines.stages.analyze"), "run", broken)
    assert cli.main(["analyze", "--set", root]) == 1
    text = capsys.readouterr().err
    assert "unexpected error: KeyError" in text and "--debug" in text and "Traceback" not in text
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["analyze", "--set", root, "--debug"])
    monkeypatch.setenv("PIPELINES_DEBUG", "1")
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["analyze", "--set", root])


def test_folds_and_the_cross_validated_objective_must_agree_at_load():
    with pytest.raises(ConfigError, match=r"split.folds: must be 0 .* or >= 2.*search.objective is 'cv'"):
        config_module.from_dict({"split": {"folds": 1}, "search": {"objective": "cv"}})
    with pytest.raises(ConfigError, match=r"search.objective: 'cv' needs split.folds >= 2, got split.folds=0"):
        config_module.from_dict({"search": {"objective": "cv"}})
    assert config_module.from_dict({"split": {"folds": 3}, "search": {"objective": "cv"}}).split.folds == 3


def test_multi_worker_needs_a_cluster_in_tf_config_and_names_the_chief(monkeypatch):
    from pipelines.core import cluster

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="'multi_worker' needs TF_CONFIG"):
        config_module.load(None, ["runtime.strategy=multi_worker"])
    spec = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(spec))
    with pytest.raises(ConfigError, match="task index 2 is outside cluster.worker"):
        config_module.load(None, ["runtime.strategy=multi_worker"])
    for task, chief in (({"type": "worker", "index": 0}, True), ({"type": "worker", "index": 1}, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({**spec, "task": task}))
        assert cluster.is_chief("multi_worker") is chief
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not cluster.is_chief("multi_worker") and cluster.is_chief("default")


def test_every_config_key_an_error_message_names_exists():
    """An error that tells the user to change `section.field` must name a field that exists."""
    import ast
    import dataclasses
    import re
    from pathlib import Path

    defaults = config_module.Config()
    sections = [field.name for field in dataclasses.fields(defaults)
                if dataclasses.is_dataclass(getattr(defaults, field.name))]
    named = re.compile(r"(?<![\w./])(" + "|".join(sections) + r")\.([a-z_]+)\b")
    wrong, checked = [], 0
    for path in Path(__file__).parent.parent.joinpath("pipelines").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            for text in (item.value for item in ast.walk(node.exc)
                         if isinstance(item, ast.Constant) and isinstance(item.value, str)):
                for section, field in named.findall(text):
                    checked += 1
                    if field not in {item.name for item in dataclasses.fields(getattr(defaults, section))}:
                        wrong.append(f"{path.name}:{node.lineno}: {section}.{field}")
    assert checked > 20 and not wrong, wrong


def test_a_config_file_without_an_experiment_takes_its_own_name(tmp_path):
    path = tmp_path / "birds.yaml"
    path.write_text("train:\n  epochs: 2\n")
    assert config_module.load(path).experiment == "birds"  # never the defaults' digits workspace
    assert config_module.load(path, ["experiment=other"]).experiment == "other"
    assert config_module.load(None).experiment == "digits"
    (tmp_path / "my birds.yaml").write_text("train:\n  epochs: 2\n")
    with pytest.raises(config_module.ConfigError, match=r"my birds.yaml: experiment: must be a plain name"):
        config_module.load(tmp_path / "my birds.yaml")



def test_unset_gan_epochs_is_150_for_the_dcgan_and_50_for_the_conditional_gan():
    plain = config_module.load("configs/digits.yaml", [])
    assert plain.gan.epochs is None and plain.gan.epochs_run == 150
    assert config_module.load("configs/digits.yaml", ["gan.conditional=true"]).gan.epochs_run == 50
    assert config_module.load("configs/digits.yaml", ["gan.conditional=true", "gan.epochs=7"]).gan.epochs_run == 7
    with pytest.raises(ConfigError, match="gan.epochs: must be >= 1, got 0"):
        config_module.load("configs/digits.yaml", ["gan.epochs=0"])
