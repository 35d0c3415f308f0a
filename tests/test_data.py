"""Data stages on an image folder with planted problems, on a CSV with broken rules, and on bad input."""

import io
import shutil

import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image, ImageEnhance

from pipelines.core import config as config_module
from pipelines.core import workspace
from pipelines.data import kinds, shards, splits
from pipelines.stages import analyze, clean, split
from tests.conftest import png, tiny_config

CLASS_A = ["astronaut", "camera", "coffee", "chelsea", "rocket", "moon", "colorwheel", "retina"]
CLASS_B = ["coins", "page", "clock", "immunohistochemistry", "horse", "hubble_deep_field", "text", "cell"]


def _photo(name: str, side: int = 128) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((side, side),
                                                                                 Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two classes of real photographs in mixed formats and modes, with planted duplicates and bad files."""
    root = tmp_path_factory.mktemp("images")
    (root / "a").mkdir()
    (root / "b").mkdir()
    formats = [("png", "RGB"), ("jpg", "L"), ("bmp", "RGB"), ("gif", "P"), ("png", "RGBA")]
    for index, name in enumerate(CLASS_A):
        suffix, mode = formats[index % len(formats)]
        _photo(name).convert(mode).save(root / "a" / f"{name}.{suffix}")
    for name in CLASS_B:
        _photo(name).save(root / "b" / f"{name}.png")
    original = _photo("astronaut")
    pixels = np.asarray(original)
    Image.fromarray(np.roll(pixels, 2, axis=1)).save(root / "a" / "astronaut_shifted.png")
    ImageEnhance.Brightness(original).enhance(1.25).save(root / "a" / "astronaut_brighter.png")
    original.save(root / "a" / "astronaut_reencoded.jpg", quality=75)
    original.resize((64, 64)).save(root / "a" / "astronaut_small.png")
    shutil.copy(root / "b" / "coins.png", root / "a" / "coins_conflict.png")  # one image, two labels
    shutil.copy(root / "b" / "clock.png", root / "b" / "clock_copy.png")  # exact duplicate
    buffer = io.BytesIO()
    _photo("rocket").save(buffer, "JPEG")
    (root / "a" / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def _image_config(root, folder, *extra):
    """Outputs under `root`; images read from `folder` (absolute, or relative to root)."""
    return tiny_config(root, "data.source=image_folder", f"data.path={folder}", "data.channels=3",
                       "data.image_size=16", "split.val_fraction=0.2", "split.test_fraction=0.2", *extra)


def test_image_folder_analysis_finds_every_planted_problem(image_folder, tmp_path):
    config = _image_config(tmp_path, image_folder)
    report = workspace.read_json(analyze.run(config).folder / "report.json")
    assert set(report["unreadable"]) == {"a/truncated.jpg", "b/notes.txt"}
    assert "not an image file" in report["unreadable"]["b/notes.txt"]
    assert {"RGB", "L", "P", "RGBA"} <= set(report["modes"])
    assert ["b/clock.png", "b/clock_copy.png"] in report["exact_duplicate_groups"]
    assert report["label_conflicts"] == [["a/coins_conflict.png (a)", "b/coins.png (b)"]]
    assert report["odd_modes"]["L"] and all(item.endswith(".jpg") for item in report["odd_modes"]["L"])
    assert report["odd_modes"]["P"] and all(item.endswith(".gif") for item in report["odd_modes"]["P"])
    assert report["odd_sizes"] == {"64x64": ["a/astronaut_small.png"]}
    assert report["baseline"]["metric"] == "accuracy"


def test_image_folder_clean_and_split_keep_near_duplicates_together(image_folder, tmp_path):
    config = _image_config(tmp_path, image_folder)
    result = clean.run(config)
    log = pd.read_csv(result.folder / "cleaning_log.csv")
    dropped = dict(zip(log[log.action == "dropped"].id, log[log.action == "dropped"].rule))
    assert dropped == {"a/truncated.jpg": "drop_unreadable", "b/notes.txt": "drop_unreadable",
                       "b/clock_copy.png": "drop_exact_duplicates", "a/coins_conflict.png": "drop_label_conflicts",
                       "b/coins.png": "drop_label_conflicts"}
    keys, = workspace.load_arrays(result.folder, "clean", "key")
    x = shards.open_shards(result.folder / "shards").read(keys)
    assert x.shape == (19, 16, 16, 3) and x.dtype == np.uint8  # 24 files, 5 dropped
    report = workspace.read_json(result.folder / "near_duplicates.json")
    family = sorted(f"a/astronaut{suffix}" for suffix in (".png", "_shifted.png", "_brighter.png",
                                                          "_reencoded.jpg", "_small.png"))
    assert sorted(report["clusters"][0]) == family  # the largest cluster: the original and its four copies
    assert all(len(cluster) <= 2 or sorted(cluster) == family for cluster in report["clusters"])
    assert result.metrics["clean/largest_cluster"] == 5
    rows = min(8, len(report["clusters"]))  # one row per cluster, five columns for the largest (dpi 90)
    png(result.folder / "near_duplicate_clusters.png", (round(1.4 * 5 * 90), round(1.5 * rows * 90)))
    manifest = workspace.read_json(split.run(config).folder / splits.MANIFEST)
    by_id = {item["id"]: item for item in manifest["items"]}
    family = [item_id for item_id in by_id if item_id.startswith("a/astronaut")]
    assert len(family) == 5 and len({by_id[item_id]["split"] for item_id in family}) == 1
    assert len({by_id[item_id]["cluster"] for item_id in family}) == 1


def test_leakage_check_names_the_items():
    items = [{"id": "x1", "sha256": "h1", "split": "train"}, {"id": "x2", "sha256": "h1", "split": "test"},
             {"id": "x3", "sha256": "h3", "split": "val", "cluster": 7},
             {"id": "x4", "sha256": "h4", "split": "train", "cluster": 7}]
    with pytest.raises(splits.LeakageError, match=r"content spans splits: x1 \(train\), x2 \(test\).*"
                                                 r"near-duplicate cluster spans splits: x3 \(val\), x4 \(train\)"):
        splits.check_leakage(items)
    temporal = [{"id": "old", "sha256": "a", "split": "test", "time": 1},
                {"id": "new", "sha256": "b", "split": "train", "time": 5}]
    with pytest.raises(splits.LeakageError, match=r"train items \['new'\] are later"):
        splits.check_leakage(temporal, temporal=True)
    validation = [{"id": "a", "sha256": "a", "split": "train", "time": 1},
                  {"id": "b", "sha256": "b", "split": "val", "time": 3}, {"id": "c", "sha256": "c", "split": "train",
                                                                          "time": 4},
                  {"id": "d", "sha256": "d", "split": "test", "time": 9}]
    with pytest.raises(splits.LeakageError, match=r"train items \['c'\] are later than the earliest val item"):
        splits.check_leakage(validation, temporal=True)


def _customers(path, rows: int = 240):
    rng = np.random.default_rng(0)
    birth_year = rng.integers(1950, 2005, rows)
    income = rng.gamma(4.0, 10000.0, rows).round(2)
    city = rng.choice(["north", "south", "east"], rows)
    frame = pd.DataFrame({
        "age": (2024 - birth_year).astype(float), "birth_year": birth_year, "income": income, "city": city,
        "customer_code": [f"C{index:05d}" for index in range(rows)], "constant": 1, "income_copy": income,
        "score": rng.uniform(0, 100, rows).round(1).astype(object), "ratio": rng.uniform(0, 1, rows),
        "group": rng.integers(0, 30, rows), "day": rng.permutation(rows),
        "target": np.where((income > 40000) ^ (city == "east"), "yes", "no"),
    })
    frame.loc[3, "age"] = -4  # declared-range violation
    frame.loc[[5, 6], "age"] = np.nan  # derivable from birth_year
    frame.loc[8, "age"] = 70  # inconsistent with birth_year
    frame.loc[10, ["income", "income_copy"]] = -50.0  # clipped to 0
    frame.loc[12, "score"] = "unknown"  # text in a numeric column
    frame.loc[14, "score"] = 150.0  # above the declared maximum: row dropped
    frame.loc[16, "ratio"] = np.inf
    frame.loc[18, "city"] = "Null"  # missing-value tokens that pandas alone keeps as text
    frame["ratio"] = frame["ratio"].astype(object)
    frame.loc[19, "ratio"] = "n/a"
    frame.to_csv(path, index=False)
    return frame


CSV_RULES = {
    "source": "csv", "path": "customers.csv", "target": "target", "group_column": "group", "time_column": "day",
    "columns": {
        "age": {"min": 0, "max": 120, "out_of_range": "missing", "impute": "derive", "derive_from": "birth_year",
                "derive_scale": -1, "derive_offset": 2024},
        "income": {"min": 0, "out_of_range": "clip", "bins": 4},
        "score": {"max": 100, "out_of_range": "drop"},
    },
}


def _csv_config(root, **split):
    tree = config_module.to_dict(tiny_config(root))
    tree["data"].update(CSV_RULES)
    tree["model"]["architecture"] = "mlp"
    tree["split"].update(split)
    return config_module.from_dict(tree)


def test_csv_analysis_and_cleaning_apply_every_rule(tmp_path):
    _customers(tmp_path / "customers.csv")
    config = _csv_config(tmp_path, group="column")
    report = workspace.read_json(analyze.run(config).folder / "report.json")
    assert report["missing"]["age"] == 2 and report["missing"]["score"] == 1
    assert report["missing"]["city"] == 1 and report["missing_tokens"]["city"] == {"Null": 1}
    assert report["missing_tokens"]["ratio"] == {"n/a": 1} and report["dtypes"]["ratio"] == "float64"
    # rows are named by their line in the file everywhere (the header is line 1)
    assert report["violations"]["range"]["age"] == ["row-5"] and report["violations"]["range"]["score"] == ["row-16"]
    assert report["violations"]["inconsistent"]["age"] == ["row-5", "row-10"]
    assert report["constant_columns"] == ["constant"]
    assert report["duplicate_columns"] == [["income", "income_copy"]]
    assert "customer_code" in report["high_cardinality"]
    warnings = " ".join(report["warnings"])
    assert "row 14, column 'score': text 'unknown'" in warnings and "row 18, column 'ratio': infinite" in warnings
    assert "data.time_column 'day' orders the rows in time, but split.strategy is 'stratified'" in warnings
    importances = dict(report["baseline"]["feature_importances"])
    assert max(importances, key=importances.get) in ("income", "income_copy", "city_east")  # the target's rule

    result = clean.run(config)
    log = pd.read_csv(result.folder / "cleaning_log.csv")
    rules = dict(zip(log.id, log.rule))
    age_rules = list(log[log.id == "row-5"].rule)  # invalid by range, then derived, never left to the median
    assert age_rules == ["columns.age.out_of_range=missing", "columns.age.impute=derive"]
    detail = log[(log.id == "row-5") & (log.rule == "columns.age.out_of_range=missing")].detail.item()
    assert detail.startswith("age=-4 outside [0, 120]") and "np." not in " ".join(log.detail)
    assert rules["row-16"] == "columns.score.out_of_range=drop"
    assert rules["row-12"] == "columns.income.out_of_range=clip"
    assert rules["column:constant"] == "drop_constant_columns"
    assert set(log[log.rule == "columns.age.impute=derive"].id) == {"row-5", "row-7", "row-8"}
    table = pd.read_parquet(result.folder / "table.parquet").set_index("__id")
    assert table.loc["row-7", "age"] == 2024 - table.loc["row-7", "birth_year"]
    assert table.loc["row-5", "age"] == 2024 - table.loc["row-5", "birth_year"]
    assert table.loc["row-12", "income"] == 0.0 and "row-16" not in table.index and "constant" not in table

    manifest = workspace.read_json(split.run(config).folder / splits.MANIFEST)
    groups = {}
    for item in manifest["items"]:
        groups.setdefault(item["group"], set()).add(item["split"])
    assert all(len(splits) == 1 for splits in groups.values())
    assert sum(manifest["counts"].values()) == len(table)


def test_temporal_split_puts_the_latest_rows_in_test(tmp_path):
    _customers(tmp_path / "customers.csv")
    config = _csv_config(tmp_path, strategy="temporal", folds=3)
    assert not [line for line in kinds.get("table").read(config).warnings if "time_column" in line]  # no warning
    clean.run(config)
    manifest_folder = split.run(config).folder
    manifest = workspace.read_json(manifest_folder / splits.MANIFEST)
    times = {name: [item["time"] for item in manifest["items"] if item["split"] == name] for name in splits.SPLITS}
    assert max(times["train"]) < min(times["val"]) <= max(times["val"]) < min(times["test"])
    fitted = {entry["column"]: entry for entry in workspace.read_json(manifest_folder / "preprocessing.json")}
    assert len(fitted["income"]["bin_edges"]) == 5 and fitted["city"]["categories"] == ["east", "north", "south"]
    assert fitted["score"]["impute"] == "median" and "scale" in fitted["score"]
    imputed = pd.read_csv(manifest_folder / "imputation_log.csv")
    rules = dict(zip(imputed.id, imputed.rule))
    assert rules["row-14"] == "impute=median" and rules["row-20"] == "impute=most_frequent"  # 'unknown', 'Null'
    assert set(imputed.id) == {"row-14", "row-18", "row-20", "row-21"}  # text, inf, 'Null', 'n/a'; nothing else
    # forward chaining: 3 folds over 4 blocks in time; each fold trains on the past and validates on the next
    assert manifest["fold_scheme"] == splits.FORWARD
    folds = {item["fold"] for item in manifest["items"] if item["split"] != "test"}
    assert folds == {0, 1, 2, 3} and all("fold" not in item for item in manifest["items"] if item["split"] == "test")
    time_of = {item["id"]: item["time"] for item in manifest["items"]}
    ids = {name: workspace.load_arrays(manifest_folder, name, "ids")[0] for name in ("train", "val")}
    data = splits.load_split(manifest_folder)
    views = splits.fold_views(manifest_folder, data)
    pool = np.concatenate([ids["train"], ids["val"]])
    assert len(views) == 3
    for number, view in enumerate(views, 1):
        fold = np.array([next(item["fold"] for item in manifest["items"] if item["id"] == str(i)) for i in pool])
        train_ids, val_ids = pool[fold < number], pool[fold == number]
        assert len(view.y["train"]) == len(train_ids) and len(view.y["val"]) == len(val_ids) > 0
        assert max(time_of[str(i)] for i in train_ids) < min(time_of[str(i)] for i in val_ids)


@pytest.mark.parametrize(("content", "message"), [
    ("a,b,target\n1,2,x\n3,4,y\n5,6\n", "line 4 has 2 fields, the header has 3"),
    ("a,b,label\n1,2,x\n3,4,y\n", "no column 'target'"),
    ("a,b,target\n1,2,x\n3,4,x\n", "target column 'target' has a single class"),
    ("a,b,target\n1,2,x\n3,4,\n", "target column 'target' is missing in rows [3]"),
    ("", "empty CSV file"),
])
def test_bad_csv_is_refused_naming_the_file_and_row(tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    tree = config_module.to_dict(tiny_config(tmp_path))
    tree["data"].update({"source": "csv", "path": "bad.csv", "target": "target"})
    tree["model"]["architecture"] = "mlp"
    with pytest.raises(ValueError, match=rf"bad.csv: .*{message.replace('[', '.').replace(']', '.')}"):
        clean.run(config_module.from_dict(tree))
    assert not workspace.stage_dir(tmp_path, "digits", "clean").exists()  # nothing half-written


def test_bad_image_folders_are_refused_naming_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no class sub-folders"):
        clean.run(_image_config(tmp_path, "empty"))
    (tmp_path / "one" / "cats").mkdir(parents=True)
    (tmp_path / "one" / "dogs").mkdir(parents=True)
    _photo("chelsea").save(tmp_path / "one" / "cats" / "cat.png")
    (tmp_path / "one" / "dogs" / "dog.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ValueError, match=r"one: 1 class\(es\) with readable items \(cats\); classification needs"):
        clean.run(_image_config(tmp_path, "one"))


def test_an_empty_class_is_reported_by_analyze_and_stops_clean_unless_left_out(tmp_path, capsys):
    folder = tmp_path / "three"
    for name in ("cats", "dogs", "owls"):
        (folder / name).mkdir(parents=True)
    for index, photo in enumerate(("chelsea", "astronaut", "camera")):
        _photo(photo).save(folder / "cats" / f"cat{index}.png")
        _photo(photo).rotate(90).save(folder / "dogs" / f"dog{index}.png")
    (folder / "owls" / "owl.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    report = workspace.read_json(analyze.run(_image_config(tmp_path, folder)).folder / "report.json")
    assert report["empty_classes"] == ["owls"] and report["class_counts"]["owls"] == 1
    with pytest.raises(ValueError, match=r"class\(es\) owls have no readable item; .* data.classes"):
        clean.run(_image_config(tmp_path, folder))
    from pipelines import __main__ as cli

    arguments = ["clean", "--set", f"runtime.root={tmp_path}", "--set", "data.source=image_folder", "--set",
                 f"data.path={folder}", "--set", "data.image_size=16"]
    assert cli.main(arguments) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "owls have no readable item" in lines[0]  # one line, no traceback
    kept = clean.run(_image_config(tmp_path, folder, "data.classes=[cats, dogs]"))
    assert kept.metrics["clean/items_out"] == 6


def test_groups_too_large_for_the_ratios_are_refused(tmp_path):
    frame = _customers(tmp_path / "customers.csv")
    frame["group"] = np.where(np.arange(len(frame)) < 230, 0, np.arange(len(frame)))  # one group of 230 rows
    frame.to_csv(tmp_path / "customers.csv", index=False)
    config = _csv_config(tmp_path, group="column")
    clean.run(config)
    with pytest.raises(ValueError, match=r"groups are too large for the requested ratios .* the largest group "
                                         r"holds 2\d\d of"):
        split.run(config)


@pytest.mark.parametrize(("method", "scope", "mean", "variance"), [
    ("zscore", "global", [2.5], [1.25]),
    ("zscore", "per_channel", [1.5, 3.5], [0.25, 0.25]),
    ("minmax", "per_channel", [1.0, 3.0], [1.0, 1.0]),
    ("minmax", "global", [1.0], [9.0]),
])
def test_normalizer_statistics(method, scope, mean, variance):
    train = np.array([[[[1, 3], [2, 4]]], [[[1, 3], [2, 4]]]], dtype=np.uint8)  # (2, 1, 2, 2 channels)
    statistics = splits.normalizer(train, config_module.NormalizeConfig(method=method, scope=scope), False)
    assert statistics["mean"] == pytest.approx(mean) and statistics["variance"] == pytest.approx(variance)


@pytest.mark.slow
def test_raw_csv_rows_through_the_bundle_match_the_pipeline(tmp_path):
    """Device parity for tables: raw rows (planted range violations, missing tokens, text and inf in numeric
    columns, an unseen category) through the bundle's predictor get the features and the predictions of the
    pipeline's own encoding; a row that training would drop is named and the others are still predicted."""
    import csv
    import subprocess
    import sys

    from deploy.edge import predict as edge
    from pipelines import __main__ as cli

    _customers(tmp_path / "customers.csv")
    config = _csv_config(tmp_path)
    tree = config_module.to_dict(config)
    tree["export"]["gate_majority_margin"] = -1.0  # a tiny model: the gates are tested elsewhere
    workspace.write_text(tmp_path / "customers.yaml", __import__("yaml").safe_dump(tree))
    for stage in ("clean", "split", "train", "export"):
        assert cli.main([stage, "--config", str(tmp_path / "customers.yaml")]) == 0, stage
    bundle = workspace.bundle_dir(tmp_path, config.experiment)
    metadata = workspace.read_json(bundle / "metadata.json")
    split_folder = workspace.stage_dir(tmp_path, config.experiment, "split")
    stored = {}
    for name in splits.SPLITS:
        x, ids = workspace.load_arrays(split_folder, name, "x", "ids")
        stored.update(zip(ids.tolist(), x))
    with open(tmp_path / "customers.csv", newline="") as stream:
        rows = {f"row-{number}": row for number, row in enumerate(csv.DictReader(stream), start=2)}
    # every row the pipeline kept, planted problems included, encodes to the very features training stored
    planted = ["row-5", "row-7", "row-12", "row-14", "row-18", "row-20", "row-21"]  # -4, missing, clip, text, ...
    assert set(planted) <= set(stored)
    for item, features in stored.items():
        encoded, _ = edge.encode_row(rows[item], metadata["preprocessing"])
        np.testing.assert_allclose(encoded, features, rtol=1e-5, atol=1e-5, err_msg=item)
    with pytest.raises(ValueError, match=r"column 'score': 150 is outside \[-inf, 100\]; training drops"):
        edge.encode_row(rows["row-16"], metadata["preprocessing"])

    # the predictor on a file: the kept rows, an unseen city, the dropped row and an extra column
    chosen = sorted(stored)[:20] + planted
    unseen = {**rows["row-3"], "city": "west"}
    with open(tmp_path / "raw.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, [*rows["row-2"], "note"])
        writer.writeheader()
        for item in chosen:
            writer.writerow({**rows[item], "note": "x"})
        writer.writerow({**rows["row-16"], "note": "x"})
        writer.writerow({**unseen, "note": "x"})
    done = subprocess.run([sys.executable, "-m", "deploy.edge.predict", str(bundle), str(tmp_path / "raw.csv")],
                          capture_output=True, text=True)
    assert done.returncode == 1  # one row failed
    labels = (bundle / "labels.txt").read_text().split()
    model = edge.LiteRTModel(bundle / "model.tflite")
    expected = [labels[index] for index in edge.decide(model.predict(np.stack([stored[i] for i in chosen])))]
    predicted = [line.split("\t")[1] for line in done.stdout.splitlines()]
    assert predicted[:len(chosen)] == expected and len(predicted) == len(chosen) + 1  # and the unseen city's
    line_of_dropped = len(chosen) + 2
    assert f"row {line_of_dropped}: column 'score': 150 is outside" in done.stderr
    assert "column(s) ['constant', 'group', 'day', 'target', 'note'] are not model inputs" in done.stderr
    assert f"row {line_of_dropped + 1}: column 'city': unseen category 'west'" in done.stderr
    assert "1 item(s) failed; the others were predicted" in done.stderr


def test_analysis_baseline_folds_hold_out_the_test_share_and_keep_groups_and_time():
    rng = np.random.default_rng(0)
    labels, times = rng.integers(0, 2, 100), np.arange(100)[::-1]
    pool, folds, how = splits.analysis_folds(100, labels, None, times, config_module.SplitConfig(strategy="temporal"))
    assert len(pool) == 85 and times[pool].max() < 85  # the latest 15 items are never looked at
    assert len(folds) == 3 and "forward folds in time" in how
    for train, held in folds:  # each fold trains on the past only
        assert times[pool[train]].max() < times[pool[held]].min()
    groups = np.repeat(np.arange(20), 5)
    rules = config_module.SplitConfig()
    pool, folds, how = splits.analysis_folds(100, labels, groups, None, rules)
    test = np.setdiff1d(np.arange(100), pool)
    assert 10 <= len(test) <= 20 and not set(groups[pool]) & set(groups[test]) and "by group" in how
    for train, held in folds:
        assert not set(groups[pool[train]]) & set(groups[pool[held]])


@pytest.mark.slow
def test_slice_floors_gate_export_and_evaluate_reports_each_slice_with_intervals(tmp_path):
    from pipelines.core.errors import StageError
    from pipelines.stages import evaluate, export, train

    _customers(tmp_path / "customers.csv")
    tree = config_module.to_dict(_csv_config(tmp_path))
    tree["data"]["slice_column"] = "city"
    tree["export"]["gate_majority_margin"] = -1.0  # a tiny model: the slice floors are what is tested
    tree["export"]["gate_min"] = {"accuracy@city=east": 1.01, "accuracy@city=west": 0.0}
    config = config_module.from_dict(tree)
    for stage in (clean, split, train):
        stage.run(config)
    folder = workspace.stage_dir(tmp_path, config.experiment, "split")
    cities = splits.slice_values(folder, "val")
    assert set(cities) == {"north", "south", "east"}
    with pytest.raises(StageError, match=r"accuracy@city=east >= 1.01: val accuracy@city=east 0\.\d+ against "
                                         r"1\.0100.*accuracy@city=west >= 0: val accuracy@city=west n/a"):
        export.run(config)
    export.run(config, allow_unblessed=True)
    evaluate.run(config)
    report = workspace.read_json(workspace.stage_dir(tmp_path, config.experiment, "evaluate") / "test_report.json")
    sliced = report["slices"]
    assert sliced["column"] == "city" and sliced["metric"] == "accuracy"
    test_cities = splits.slice_values(folder, "test")
    y = workspace.load_arrays(folder, "test", "y")[0]
    assert sum(row["count"] for row in sliced["values"].values()) == len(y)
    for city, row in sliced["values"].items():
        mask = test_cities == city
        assert row["count"] == mask.sum()
        low, high = row["keras"]["interval"]
        assert low <= row["keras"]["accuracy"] <= high
    text = (workspace.stage_dir(tmp_path, config.experiment, "evaluate") / "test_report.md").read_text()
    assert "Per slice of `city`" in text and "| east | " in text
