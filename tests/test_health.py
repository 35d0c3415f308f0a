"""Data health: the review loop (relabel, exclude), the table rules acted on, label issues from out-of-fold
predictions."""

import numpy as np
import pandas as pd
import pytest

from pipelines.core import ledger, tracking, workspace
from pipelines.core.errors import DataError
from pipelines.data import review, sources
from pipelines.stages import clean, split
from tests.conftest import tiny_config


def _cancer(root, *extra):
    return tiny_config(root, "data.source=breast_cancer", "experiment=cancer", "model.architecture=mlp", *extra)


def _table(folder):
    return pd.read_parquet(folder / "table.parquet").set_index("__id")


def test_relabel_and_exclude_change_exactly_the_named_items_and_are_logged(tmp_path):
    raw = sources.load(_cancer(tmp_path).data, tmp_path)
    before = raw.features.assign(__target=raw.target.to_numpy(), __id=list(raw.ids)).set_index("__id")
    (tmp_path / "relabel.csv").write_text("id,label\nbreast_cancer-0003,malignant\nbreast_cancer-0010,benign\n")
    (tmp_path / "exclude.csv").write_text("id,reason\nbreast_cancer-0005,blurred scan\nbreast_cancer-0007,\n")
    config = _cancer(tmp_path, "data.relabel=relabel.csv", "data.exclude=exclude.csv")
    result = clean.run(config)
    after = _table(result.folder)

    names = ("malignant", "benign")  # scikit-learn's order: 0 malignant, 1 benign
    assert set(before.index) - set(after.index) == {"breast_cancer-0005", "breast_cancer-0007"}
    assert after.loc["breast_cancer-0003", "__target"] == names.index("malignant")
    assert after.loc["breast_cancer-0010", "__target"] == names.index("benign")
    untouched = after.index.difference(["breast_cancer-0003", "breast_cancer-0010"])
    assert (after.loc[untouched, "__target"] == before.loc[untouched, "__target"]).all()
    pd.testing.assert_frame_equal(after.drop(columns="__target"), before.loc[after.index].drop(columns="__target"),
                                  check_names=False)
    assert result.metrics["clean/excluded"] == 2
    assert result.metrics["clean/relabelled"] == sum(before.loc[item, "__target"] != names.index(label) for item, label
                                                     in (("breast_cancer-0003", "malignant"),
                                                         ("breast_cancer-0010", "benign")))

    log = pd.read_csv(result.folder / "cleaning_log.csv", keep_default_na=False).set_index("id")
    assert log.loc["breast_cancer-0005", "rule"] == "data.exclude"
    assert log.loc["breast_cancer-0005", "action"] == "dropped"
    assert log.loc["breast_cancer-0005", "detail"] == "blurred scan (reviewed in exclude.csv:2)"
    assert log.loc["breast_cancer-0007", "detail"] == "no reason given (reviewed in exclude.csv:3)"
    assert log.loc["breast_cancer-0003", "rule"] == "data.relabel"
    assert log.loc["breast_cancer-0003", "detail"].endswith("-> malignant (reviewed in relabel.csv:2)")

    # a new decision is a new input: clean reruns
    (tmp_path / "exclude.csv").write_text("id,reason\nbreast_cancer-0005,blurred scan\n")
    again = clean.run(config)
    assert not again.skipped and "breast_cancer-0007" in _table(again.folder).index


@pytest.mark.parametrize("content, message", [
    ("id,label\nbreast_cancer-0003,benign\nbreast_cancer-9999,benign\n",
     "relabel.csv: line 3: id 'breast_cancer-9999' is not an item of the data"),
    ("id,label\nbreast_cancer-0003,cat\n", "relabel.csv: line 2: label 'cat' is not a class"),
    ("id,new\nbreast_cancer-0003,benign\n", "relabel.csv: needs the columns id and label"),
])
def test_a_bad_decision_file_is_refused_naming_the_file_line_and_id(tmp_path, content, message):
    (tmp_path / "relabel.csv").write_text(content)
    config = _cancer(tmp_path, "data.relabel=relabel.csv")
    with pytest.raises(DataError, match=message):
        review.apply(sources.load(config.data, tmp_path), config.data, tmp_path, tmp_path / "no-split")


def test_an_excluded_id_that_does_not_exist_is_an_error_naming_it(tmp_path):
    (tmp_path / "exclude.csv").write_text("id,reason\nbreast_cancer-00x1,typo\n")
    with pytest.raises(DataError, match="exclude.csv: line 2: id 'breast_cancer-00x1' is not an item"):
        clean.run(_cancer(tmp_path, "data.exclude=exclude.csv"))


def test_test_items_of_a_used_test_split_are_never_relabelled_or_dropped(tmp_path):
    config = _cancer(tmp_path)
    clean.run(config)
    folder = split.run(config).folder
    manifest = workspace.read_json(folder / "split_manifest.json")["items"]
    test_item = next(item["id"] for item in manifest if item["split"] == "test")
    train_item = next(item["id"] for item in manifest if item["split"] == "train")
    (tmp_path / "exclude.csv").write_text(f"id,reason\n{test_item},looks wrong\n")
    reviewed = _cancer(tmp_path, "data.exclude=exclude.csv")
    assert clean.run(reviewed).metrics["clean/excluded"] == 1  # not evaluated yet: the reviewer may drop it

    tracking.configure(config)
    ledger.record(ledger.test_keys(folder), {"experiment": "cancer", "evaluate_run_id": "test"})
    with pytest.raises(DataError, match=f"exclude.csv: line 2: '{test_item}' is a test item the test ledger"):
        clean.run(reviewed, force=True)
    (tmp_path / "exclude.csv").write_text(f"id,reason\n{train_item},looks wrong\n")
    assert clean.run(reviewed).metrics["clean/excluded"] == 1  # a training item still may go
    assert np.isin([train_item], _table(clean.run(reviewed).folder).index).sum() == 0
