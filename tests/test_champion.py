"""One rule decides the champion, and a new champion always reaches the bundle (and only it is evaluated)."""

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from pipelines import __main__ as cli
from pipelines.core import tracking, workspace
from pipelines.core.errors import StageError
from pipelines.stages import evaluate
from pipelines.training import champion, fitting
from tests.conftest import TINY, tiny_config

ACCURACY, MAE = fitting.objective("classification"), fitting.objective("regression")


def _tags(split: str, score: float, loss: float, objective=ACCURACY) -> dict:
    return {champion.SPLIT_TAG: split, objective.key: repr(score), "val/loss": repr(loss)}


def test_the_champion_rule():
    better, worse = {"val/accuracy": 0.95, "val/loss": 0.2}, {"val/accuracy": 0.90, "val/loss": 0.1}
    assert champion.takes_over(worse, "split-a", None, ACCURACY)  # no champion yet
    assert champion.takes_over(worse, "split-b", _tags("split-a", 0.99, 0.01), ACCURACY)  # a new split
    assert champion.takes_over(better, "split-a", _tags("split-a", 0.93, 0.1), ACCURACY)
    assert not champion.takes_over(worse, "split-a", _tags("split-a", 0.93, 0.3), ACCURACY)
    assert not champion.takes_over(better, "split-a", _tags("split-a", 0.95, 0.2), ACCURACY)  # a tie keeps it
    assert champion.takes_over(better, "split-a", _tags("split-a", 0.95, 0.3), ACCURACY)  # tie: lower loss wins
    assert champion.takes_over({"val/mae": 1.0, "val/loss": 2.0}, "s", _tags("s", 1.5, 2.0, MAE), MAE)
    assert not champion.takes_over({"val/mae": 2.0, "val/loss": 2.0}, "s", _tags("s", 1.5, 2.0, MAE), MAE)
    assert champion.takes_over(worse, "split-a", {champion.SPLIT_TAG: "split-a"}, ACCURACY)  # no scores: replace


def _cli(root, stage, *settings):
    return cli.main([stage, *[item for value in [*TINY, f"runtime.root={root}", *settings]
                              for item in ("--set", value)]])


@pytest.mark.slow
def test_a_new_champion_reaches_the_bundle_and_a_worse_model_does_not(tmp_path, capsys):
    # One epoch and no search: a weak champion that a longer training beats for sure.
    assert _cli(tmp_path, "all", "train.epochs=1", "search.n_trials=0") == 0
    config = tiny_config(tmp_path, "train.epochs=1", "search.n_trials=0")
    first = tracking.champion_version(config)
    bundle = workspace.bundle_dir(tmp_path, config.experiment) / "metadata.json"
    assert workspace.read_json(bundle)["source"]["version"] == first

    assert cli.main(["train", "--force", *[item for value in [*TINY, f"runtime.root={tmp_path}", "train.epochs=12",
                                                              "search.n_trials=0"] for item in ("--set", value)]]) == 0
    second = tracking.champion_version(config)
    assert int(second) > int(first)
    # Evaluate refuses to score a Keras champion beside a bundle made from another version.
    with pytest.raises(StageError, match=f"exported from version {first}.*now version {second}"):
        evaluate.run(tiny_config(tmp_path, "train.epochs=12", "search.n_trials=0"), reuse_test=True)
    capsys.readouterr()
    assert _cli(tmp_path, "export", "search.n_trials=0") == 0
    assert "[export] running" in capsys.readouterr().out  # not "skipped (unchanged)"
    metadata = workspace.read_json(bundle)
    assert metadata["source"]["version"] == second
    export = workspace.read_manifest(workspace.stage_dir(tmp_path, config.experiment, "export"))
    assert export["metrics"]["champion_version"] == second

    # A worse model on the same split is registered but does not take the alias; export stays as it is.
    assert _cli(tmp_path, "train", "train.epochs=1", "train.seed=3", "search.n_trials=0") == 0
    assert tracking.champion_version(config) == second
    assert _cli(tmp_path, "export", "search.n_trials=0") == 0
    assert "[export] skipped" in capsys.readouterr().out


def test_only_not_found_means_no_champion(tmp_path, monkeypatch):
    """A locked or broken store must stop the stage, not pass for "no champion" and silently retrain."""
    config = tiny_config(tmp_path)
    tracking.configure(config)
    assert tracking.champion_version(config) is None  # no registered model: not found, so no champion

    def locked(self, *args):
        raise MlflowException("(sqlite3.OperationalError) database is locked", error_code=TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(MlflowClient, "get_registered_model", locked)
    with pytest.raises(MlflowException, match="database is locked"):
        tracking.champion_version(config)
    monkeypatch.setattr(MlflowClient, "get_model_version", locked)
    with pytest.raises(MlflowException, match="database is locked"):
        tracking.version_exists(config, "1")
