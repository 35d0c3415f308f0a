"""Data health: the review loop (relabel, exclude), the table rules acted on, label issues from out-of-fold
predictions."""

import numpy as np
import pandas as pd
import pytest

import deploy.edge.predict as edge
from pipelines.core import ledger, tracking, workspace
from pipelines.core.errors import DataError
from pipelines.data import review, sources
from pipelines.stages import analyze, clean, split
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


# --- tables acted on: each rule on its own column of one small CSV with planted cases ---

ROWS = 80
CLIPPED, SET_MISSING, DROPPED, EMPTY = [3, 17, 31, 45, 59, 73], [5, 25, 65], [2, 12, 22, 32, 42, 52, 62, 72], [7, 8]


def _planted(path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(50, 5, ROWS), "w": rng.normal(0, 1, ROWS), "m": rng.normal(10, 1, ROWS),
                          "c": rng.normal(0, 1, ROWS), "n": np.zeros(ROWS), "e": rng.normal(0, 1, ROWS)})
    frame.loc[CLIPPED, "a"], frame.loc[SET_MISSING, "m"], frame.loc[DROPPED, "c"] = 500.0, -100.0, 40.0
    frame.loc[[1, 2, 3], "n"] = 1.0
    frame["w_copy"] = frame["w"]
    frame["c_twin"] = 2 * frame["c"] + rng.normal(0, 1e-3, ROWS)
    frame["e"] = frame["e"].astype(object)
    frame.loc[EMPTY, "e"] = ""
    frame["target"] = np.tile(["yes", "no"], ROWS // 2)
    text = frame.round(6).to_csv(index=False)
    path.write_text(text + "1,2,3\n" + "1,2,3,4,5,6,7,8,9,10,11\n")  # lines 82 and 83: wrong field counts
    return frame


def _row(index):
    return f"row-{index + 2}"  # a row is named by its line; the header is line 1


PLANTED_RULES = [
    "data.source=csv", "data.path=planted.csv", "data.target=target", "model.architecture=mlp", "experiment=planted",
    "data.bad_lines=skip", "clean.missing_rows=drop", "data.drop_near_constant=0.9",
    "data.drop_duplicate_columns=true", "data.drop_correlated=0.95",
    'data.columns={"a": {"outliers": "clip"}, "w": {"outliers": "winsorize", "outlier_quantiles": [0.05, 0.95]}, '
    '"m": {"outliers": "missing", "fences": "quantile", "outlier_quantiles": [0.1, 0.9]}, '
    '"c": {"outliers": "drop"}}',
]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    frame = _planted(root / "planted.csv")
    config = tiny_config(root, *PLANTED_RULES)
    cleaned, splitted = clean.run(config), split.run(config)
    items = workspace.read_json(splitted.folder / "split_manifest.json")["items"]
    read = lambda path: pd.read_csv(path, keep_default_na=False)  # noqa: E731
    return {"frame": frame, "clean": cleaned.folder, "split": splitted.folder, "config": config,
            "cleaning_log": read(cleaned.folder / "cleaning_log.csv"),
            "rules_log": read(splitted.folder / "table_rules_log.csv"),
            "where": {item["id"]: item["split"] for item in items}}


def _train_values(planted, column):
    """The column's values on the training rows, those an outlier rule left out included (fences see them)."""
    logged = planted["rules_log"]
    train = {item for item, name in planted["where"].items() if name == "train"}
    train |= set(logged[logged.rule == "columns.c.outliers=drop"].id)
    frame = planted["frame"].assign(id=[_row(index) for index in range(ROWS)]).set_index("id")
    return frame.loc[sorted(train), column].astype(float)


def test_bad_lines_are_quarantined_with_their_line_numbers_and_stop_by_default(planted, tmp_path):
    quarantine = pd.read_csv(planted["clean"] / "quarantine.csv")
    assert quarantine.line.tolist() == [82, 83] and quarantine.fields.tolist() == [3, 11]
    assert quarantine.text.tolist() == ["1,2,3", "1,2,3,4,5,6,7,8,9,10,11"]
    logged = planted["cleaning_log"].set_index("id")
    assert logged.loc["line-82", "rule"] == "data.bad_lines=skip"
    assert len(_table(planted["clean"])) == ROWS - len(EMPTY)  # every good row read, none shifted
    config = tiny_config(planted["clean"].parents[3], *[item for item in PLANTED_RULES if "bad_lines" not in item])
    with pytest.raises(DataError, match="planted.csv: line 82 has 3 fields, the header has 9"):
        sources.load(config.data, config.root)


def test_missing_rows_drop_leaves_out_exactly_the_rows_with_a_missing_value(planted):
    logged = planted["cleaning_log"]
    dropped = logged[logged.rule == "clean.missing_rows=drop"]
    assert sorted(dropped.id) == sorted(_row(index) for index in EMPTY)
    assert set(dropped.detail) == {"missing e"}
    assert not set(dropped.id) & set(_table(planted["clean"]).index)


def test_clip_moves_outliers_to_the_iqr_fences_learned_on_train(planted):
    values = _train_values(planted, "a")
    first, third = values.quantile([0.25, 0.75])
    high = third + 1.5 * (third - first)
    logged = planted["rules_log"][planted["rules_log"].rule == "columns.a.outliers=clip"]
    assert sorted(logged.id) == sorted(_row(index) for index in CLIPPED)  # in every split, by train's fences
    assert {planted["where"][item] for item in logged.id} - {"train"}, "a planted outlier outside train"
    assert all(detail.endswith(f"clipped to {high:g}") for detail in logged.detail)
    rules = workspace.read_json(planted["split"] / "dataset.json")["column_rules"]["a"]
    assert rules["max"] == pytest.approx(high) and rules["out_of_range"] == "clip"  # the device clips alike:
    values = {"a": planted["frame"]["a"].to_numpy(dtype=float).copy()}
    drop, events = edge.column_rules(values, {"a": rules}, ROWS)
    assert sorted(row for row, *_ in events) == CLIPPED and not drop.any()
    assert values["a"][CLIPPED] == pytest.approx([high] * len(CLIPPED))


def test_winsorize_clips_to_the_training_quantiles(planted):
    low, high = _train_values(planted, "w").quantile([0.05, 0.95])
    logged = planted["rules_log"][planted["rules_log"].rule == "columns.w.outliers=winsorize"]
    frame = planted["frame"].assign(id=[_row(index) for index in range(ROWS)]).set_index("id")
    kept = [item for item in frame.index if item in planted["where"] or item in set(logged.id)]
    outside = frame.loc[kept, "w"].astype(float).round(6)
    assert sorted(logged.id) == sorted(outside[(outside < low) | (outside > high)].index)
    assert len(logged) >= 4


def test_missing_blanks_outliers_for_the_train_fitted_imputer(planted):
    logged = planted["rules_log"][planted["rules_log"].rule == "columns.m.outliers=missing"]
    assert set(_row(index) for index in SET_MISSING) <= set(logged.id)
    assert all(detail.endswith("set missing") for detail in logged.detail)
    imputed = pd.read_csv(planted["split"] / "imputation_log.csv")
    assert set(logged.id) <= set(imputed[imputed.detail.str.startswith("missing m ->")].id)


def test_drop_leaves_out_training_outliers_only(planted):
    logged = planted["rules_log"][planted["rules_log"].rule == "columns.c.outliers=drop"]
    values = _train_values(planted, "c")
    first, third = values.quantile([0.25, 0.75])
    outside = values[(values < first - 1.5 * (third - first)) | (values > third + 1.5 * (third - first))]
    assert sorted(logged.id) == sorted(outside.index)  # every training outlier, planted or natural
    planted_ids = {_row(index) for index in DROPPED}
    assert planted_ids & set(logged.id)
    assert not set(logged.id) & set(planted["where"])  # gone from every split
    kept = planted_ids - set(logged.id)
    assert kept and {planted["where"][item] for item in kept} <= {"val", "test"}  # evaluation rows stay


def test_feature_selection_drops_near_constant_duplicate_and_correlated_columns_on_train(planted):
    logged = planted["rules_log"][planted["rules_log"].id.str.startswith("column:")].set_index("id")
    assert logged.rule.to_dict() == {"column:n": "data.drop_near_constant",
                                     "column:w_copy": "data.drop_duplicate_columns",
                                     "column:c_twin": "data.drop_correlated"}
    names = workspace.read_json(planted["split"] / "dataset.json")["feature_names"]
    assert sorted(names) == ["a", "c", "e", "m", "w"]


# --- label issues from out-of-fold predictions (cleanlab) ---

@pytest.mark.slow
def test_health_reports_and_excludes_planted_label_errors_from_train_and_val_only(tmp_path):
    rng = np.random.default_rng(1)
    flipped = sorted(rng.choice(540, 16, replace=False).tolist())
    raw = sources.load(tiny_config(tmp_path, "data.classes=['0','1','7']").data, tmp_path)
    given = {raw.ids[index]: raw.class_names[raw.labels[index]] for index in flipped}
    (tmp_path / "relabel.csv").write_text("id,label\n" + "".join(
        f"{item},{'1' if label == '0' else '0'}\n" for item, label in given.items()))
    config = tiny_config(tmp_path, "data.classes=['0','1','7']", "data.relabel=relabel.csv", "split.strategy=random",
                         "health.action=exclude", "data.near_duplicates=false")
    clean.run(config)
    result = split.run(config)
    where = {item["id"]: item["split"] for item in
             workspace.read_json(result.folder / "split_manifest.json")["items"]}
    issues = pd.read_csv(result.folder / "label_issues.csv", dtype=str)
    assert set(issues.split) <= {"train", "val"} and not set(issues.id) & {i for i, s in where.items() if s == "test"}
    planted = set(given)
    reported = set(issues.id)
    # every flipped item outside test is found and, confidently mislabelled, left out; few others are
    assert len(planted & reported) >= 0.8 * len(planted - {i for i, s in where.items() if s == "test"})
    assert len(reported - planted) <= 3
    excluded = set(issues[issues.action == "excluded"].id)
    assert excluded and not excluded & set(where)  # gone from the manifest
    train_ids, = workspace.load_arrays(result.folder, "train", "ids")
    assert not excluded & set(train_ids.tolist())
    assert result.metrics["split/health/excluded"] == len(excluded)
    report = workspace.read_json(result.folder / "health.json")
    assert set(report["class_health"]) == {"0", "1", "7"} and min(report["class_health"].values()) < 1.0
    assert (result.folder / "health_suspects.png").read_bytes()[:4] == b"\x89PNG"


def test_analyze_reports_label_health_outside_the_test_share(tmp_path):
    result = analyze.run(_cancer(tmp_path, "health.action=report"))
    section = workspace.read_json(result.folder / "report.json")["label_health"]
    assert set(section["class_health"]) == {"malignant", "benign"}
    assert 0.6 * 569 < section["items"] < 569 and "held out" in section["evaluated_on"]
    assert section["label_issues"] == result.metrics["analyze/label_issues"]
    assert len(section["worst_suspects"]) == min(20, section["label_issues"])
    assert all(suspect[1] != suspect[2] for suspect in section["worst_suspects"])
    # Datalab's outliers and near-duplicates on the encoded rows: counted, and the worst outliers listed
    assert section["outliers"] == result.metrics["analyze/outliers"] and 0 < section["outliers"] < 0.1 * 569
    assert section["near_duplicates"] == result.metrics["analyze/near_duplicates"]
    assert len(section["worst_outliers"]) == min(20, section["outliers"])


# --- outliers and near-duplicates (cleanlab's Datalab) and what the MLflow run of split holds ---

def test_datalab_finds_a_planted_outlier_and_a_planted_near_duplicate_pair():
    from sklearn.datasets import load_digits

    from pipelines.data import health

    features, labels = load_digits(return_X_y=True)
    features = features[:600].astype(np.float32)
    labels = labels[:600]
    features[11] = np.where(np.arange(64) % 2, 16.0, 0.0)  # a stripe pattern no digit looks like
    features[40] = features[41] * 1.02  # nearly the same image twice (2% brighter)
    found = health.data_issues(features, labels, seed=0)
    assert found["outlier"][11] and found["outlier_score"].argmin() == 11  # the most unusual of 600
    assert np.flatnonzero(found["near_duplicate"]).tolist() == [40, 41]
    assert found["nearest"][40] == 41 and found["nearest"][41] == 40
    assert found["outlier"].mean() < 0.05 and found["near_duplicate"].mean() < 0.05  # the rest is mostly clean
    assert not health.data_issues(features[:8], labels[:8], seed=0)["outlier"].any()  # too few for a kNN graph


def _digit_folder(root, count=150):
    """Digits 0, 1 and 7 as 8x8 PNGs in class folders, three more 7s in folder 0 (label errors), and in folder 1
    a checkerboard: no digit at all."""
    from PIL import Image
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    for name in ("0", "1", "7"):
        (root / "digits" / name).mkdir(parents=True)
        for index in np.flatnonzero(labels == int(name))[:count]:
            pixels = (images[index].reshape(8, 8) * 15).astype(np.uint8)
            Image.fromarray(pixels).save(root / "digits" / name / f"{index:04d}.png")
    for index in np.flatnonzero(labels == 7)[count::8][:3]:
        Image.fromarray((images[index].reshape(8, 8) * 15).astype(np.uint8)).save(
            root / "digits" / "0" / f"{index:04d}.png")
    board = np.where((np.arange(8)[:, None] + np.arange(8)) % 2, 240, 0).astype(np.uint8)
    Image.fromarray(board).save(root / "digits" / "1" / "odd.png")


@pytest.mark.slow
def test_split_reports_outliers_and_logs_the_gallery_and_counts_to_its_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    _digit_folder(tmp_path)
    config = tiny_config(tmp_path, "data.source=image_folder", "data.path=digits", "data.channels=1",
                         "split.strategy=random", "health.action=report", "data.near_duplicates=false")
    clean.run(config)
    result = split.run(config)
    report = workspace.read_json(result.folder / "health.json")
    found = pd.read_csv(result.folder / "data_issues.csv", dtype=str)
    where = {item["id"]: item["split"] for item in
             workspace.read_json(result.folder / "split_manifest.json")["items"]}
    odd = next(item for item in where if "odd" in item)
    outliers = found[found.issue == "outlier"]
    if where[odd] != "test":  # the checkerboard is the worst outlier of train+val; test is never read
        assert outliers.id.iloc[0] == odd and outliers.label.iloc[0] == "1"
    assert set(found.split) <= {"train", "val"} and not {i for i, s in where.items() if s == "test"} & set(found.id)
    assert report["outliers"] == len(outliers) == sum(report["class_outliers"].values()) > 0
    assert report["near_duplicates"] == (found.issue == "near_duplicate").sum()

    tracking.configure(config)
    client = MlflowClient()
    artifacts = {item.path for item in client.list_artifacts(result.run_id, "health")}
    assert {"health/health_suspects.png", "health/health_outliers.png", "health/label_issues.csv",
            "health/data_issues.csv", "health/health.json"} <= artifacts
    assert client.download_artifacts(result.run_id, "health/health_suspects.png", str(tmp_path))
    logged = client.get_run(result.run_id).data.metrics
    assert logged["split/health/label_issues"] == report["label_issues"] > 0
    assert logged["split/health/outliers"] == report["outliers"]
    assert {f"split/health/{field}/{name}" for field in ("class_health", "class_issues", "class_outliers")
            for name in ("0", "1", "7")} <= set(logged)
    assert logged["split/health/class_health/1"] == report["class_health"]["1"]
