"""The test ledger lives in the tracking store and keys on the content of the test items: `make clean`, a new
split seed or another experiment name over the same data cannot evaluate a used test set again."""

import shutil

import pytest

from pipelines import __main__ as cli
from pipelines.core import ledger, workspace
from pipelines.core.errors import DataError
from pipelines.stages import evaluate, split
from tests.conftest import TINY, tiny_config

WINE = [*TINY, "data.source=wine", "experiment=wine", "model.architecture=mlp", "train.epochs=40", "train.patience=10",
        "search.n_trials=0"]


def _all(root, *extra):
    return cli.main(["all", *[item for setting in [*WINE, f"runtime.root={root}", *extra]
                              for item in ("--set", setting)]])


def _test_ids(root, experiment="wine"):
    manifest = workspace.read_json(workspace.stage_dir(root, experiment, "split") / "split_manifest.json")
    return {item["content"] for item in manifest["items"] if item["split"] == "test"}


def _first_use(root):
    report = workspace.read_json(workspace.stage_dir(root, "wine", "evaluate") / "test_report.json")
    return report["record"]["evaluate_run_id"]


@pytest.mark.slow
def test_a_used_test_set_is_refused_after_clean_a_new_seed_or_a_new_name(tmp_path):
    assert _all(tmp_path) == 0
    first, used = _first_use(tmp_path), _test_ids(tmp_path)

    # make clean: the workspace goes, the store keeps the ledger
    shutil.rmtree(tmp_path / "data" / "processed")
    assert _all(tmp_path) == 1  # every stage again, evaluate refuses
    with pytest.raises(ledger.TestSetUsed, match=rf"{len(used)} of the {len(used)} test items were first "
                                                   rf"evaluated on .* by MLflow run {first} \(1 use"):
        evaluate.run(tiny_config(tmp_path, *WINE))

    # a new seed draws another test set from the same pool: it shares items with the used one
    assert _all(tmp_path, "split.seed=7") == 1
    overlap = len(_test_ids(tmp_path) & used)
    assert 0 < overlap < len(used)
    with pytest.raises(ledger.TestSetUsed, match=rf"{overlap} of the .* by MLflow run {first} .*'wine'"):
        evaluate.run(tiny_config(tmp_path, *WINE, "split.seed=7"))

    # the same data under another experiment name
    assert _all(tmp_path, "experiment=wine_again") == 1
    with pytest.raises(ledger.TestSetUsed, match=rf"by MLflow run {first}"):
        evaluate.run(tiny_config(tmp_path, *WINE, "experiment=wine_again"))

    # a re-split that keeps the used items out of its test split is a fresh test set
    assert _all(tmp_path, "split.seed=7", "split.exclude_used_from_test=true") == 0
    fresh = _test_ids(tmp_path)
    assert fresh and not fresh & used
    report = workspace.read_json(workspace.stage_dir(tmp_path, "wine", "evaluate") / "test_report.json")
    assert report["uses"] == 1 and report["earlier_uses"] == []
    # ... and the ledger now holds both test sets: a third split cannot find enough unused rows
    assert ledger.used_keys() == used | fresh
    with pytest.raises(DataError, match=r"split: 54 of 178 items were in an earlier evaluated test split; the 124 "
                                        r"unused items .* cannot hold a test split of 0.70"):
        split.run(tiny_config(tmp_path, *WINE, "split.seed=8", "split.exclude_used_from_test=true",
                              "split.test_fraction=0.7"))


@pytest.mark.slow
def test_reuse_is_counted_and_the_report_names_every_earlier_use(tmp_path):
    assert _all(tmp_path) == 0
    first = _first_use(tmp_path)
    assert _all(tmp_path, "experiment=other") == 1  # the same rows under another name: refused
    assert cli.main(["evaluate", *[item for setting in [*WINE, f"runtime.root={tmp_path}", "experiment=other"]
                                   for item in ("--set", setting)], "--reuse-test"]) == 0
    report = workspace.read_json(workspace.stage_dir(tmp_path, "other", "evaluate") / "test_report.json")
    assert report["uses"] == 2
    assert [use["evaluate_run_id"] for use in report["earlier_uses"]] == [first]
    text = (workspace.stage_dir(tmp_path, "other", "evaluate") / "test_report.md").read_text()
    assert f"MLflow run {first} (experiment 'wine')" in text and "REUSED" in text
