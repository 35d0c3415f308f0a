"""Pure pieces of the stages: canonical images, drop rules, search sampling, variant choice, metrics."""

import io

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as sk_metrics

from pipelines.core import config as config_module
from pipelines.data import duplicates, sources
from pipelines.training import metrics, tuning, variants


def test_canonical_image_is_uint8_resized_with_the_configured_channels():
    raw = np.zeros((8, 8), np.uint8)
    raw[2:6, 3:5] = 255  # full-intensity block; the rest is background
    image = sources.to_canonical(Image.fromarray(raw), 16, 1)
    assert image.shape == (16, 16, 1) and image.dtype == np.uint8
    assert image[8, 8, 0] == 255 and image[:2].max() == 0 and image[:, -2:].max() == 0
    rgba = np.zeros((20, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :5, 3] = 255  # left half opaque red, right half transparent
    converted = sources.to_canonical(Image.fromarray(rgba, "RGBA"), 10, 3)
    assert converted.shape == (10, 10, 3)
    assert tuple(converted[5, 1]) == (200, 0, 0) and tuple(converted[5, 8]) == (0, 0, 0)
    palette = Image.fromarray(raw).convert("P")
    assert sources.to_canonical(palette, 8, 3).shape == (8, 8, 3)


def _reopened(image: Image.Image, format: str, **options) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    reopened = Image.open(io.BytesIO(buffer.getvalue()))
    reopened.load()
    return reopened


def test_odd_image_modes_are_converted_by_rule():
    gradient = _reopened(Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)), "PNG")
    assert gradient.mode.startswith("I;16")
    grey = sources.to_canonical(gradient, 64, 1)[..., 0]
    assert grey.min() == 0 and grey.max() == 255 and len(np.unique(grey)) > 200  # scaled, not clipped
    assert sources.conversion_rules(gradient) == ["16-bit scaled to 8 bits (x 255/65535)"]
    cmyk = _reopened(Image.new("RGB", (16, 16), (200, 30, 30)).convert("CMYK"), "JPEG", quality=95)
    assert cmyk.mode == "CMYK" and np.abs(sources.to_canonical(cmyk, 16, 3)[8, 8].astype(int)
                                          - (200, 30, 30)).max() < 12
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:10] = 255  # a bright top band
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the camera says rotate 90 degrees clockwise to view
    rotated = _reopened(Image.fromarray(tall), "JPEG", exif=exif.tobytes(), quality=95)
    viewed = sources.to_canonical(rotated, 40, 1)[..., 0]  # 20x40 becomes 40x20 wide: the band on the right
    assert viewed[:, -8:].mean() > 200 and viewed[:, :8].mean() < 50
    assert sources.conversion_rules(rotated) == ["EXIF orientation 6 applied"]
    palette = Image.fromarray(tall).convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])  # the bright band's index is transparent
    composited = sources.to_canonical(palette, 20, 1)[..., 0]
    assert composited[:4].max() == 0  # transparent composited on black
    assert sources.conversion_rules(palette) == ["transparency composited on black"]


def test_drop_rules_log_duplicates_and_conflicts():
    hashes = ["a", "a", "b", "b", "c"]
    labels = np.array([0, 0, 1, 2, 1])
    ids, names = ("row-2", "row-3", "row-4", "row-5", "row-6"), ("cat", "dog", "owl")
    drops = duplicates.find_drops(hashes, labels, config_module.CleanConfig(), ids, names)
    assert drops[1] == ("drop_exact_duplicates", "identical to row-2") and 0 not in drops
    assert drops[2] == drops[3] == ("drop_label_conflicts", "same content carries labels dog, owl: row-4, row-5")
    kept = duplicates.find_drops(hashes, labels, config_module.CleanConfig(drop_label_conflicts=False), ids, names)
    assert set(kept) == {1, 3}


def test_random_search_samples_inside_the_space_and_is_seeded():
    config = config_module.from_dict({"search": {"n_trials": 20, "space": {
        "train.learning_rate": {"kind": "log_uniform", "low": 1e-4, "high": 1e-2},
        "train.batch_size": {"kind": "int", "low": 16, "high": 64},
        "train.optimizer": {"kind": "choice", "values": ["adam", "sgd"]}}}})
    trials = tuning.sample(config.search)
    assert len(trials) == 20 and trials == tuning.sample(config.search)
    rates = [trial["train.learning_rate"] for trial in trials]
    assert min(rates) >= 1e-4 and max(rates) <= 1e-2 and min(rates) < 1e-3 < max(rates)
    assert all(isinstance(trial["train.batch_size"], int) and 16 <= trial["train.batch_size"] <= 64
               for trial in trials)
    applied = tuning.apply(config, trials[0])
    assert applied.train.optimizer == trials[0]["train.optimizer"]


def test_export_picks_the_smallest_variant_within_the_allowed_drop():
    table = {"float32": {"size_bytes": 100, "val_accuracy": 0.99},
             "int8": {"size_bytes": 30, "val_accuracy": 0.975}}
    settings = config_module.ExportConfig
    assert variants.choose(table, 0.99, settings(max_accuracy_drop=0.02)) == "int8"
    assert variants.choose(table, 0.99, settings(max_accuracy_drop=0.01)) == "float32"
    with pytest.raises(RuntimeError, match="no TF-Lite variant within export.max_accuracy_drop"):
        variants.choose(table, 0.999, settings(max_accuracy_drop=0.001))
    regression = {"float32": {"size_bytes": 100, "val_mae": 10.0}, "int8": {"size_bytes": 30, "val_mae": 10.4}}
    assert variants.choose(regression, 10.0, settings(max_mae_increase=0.05), "val_mae") == "int8"
    assert variants.choose(regression, 10.0, settings(max_mae_increase=0.01), "val_mae") == "float32"
    detector = {"float32": {"size_bytes": 100, "val_f1": 0.8}, "int8": {"size_bytes": 30, "val_f1": 0.78}}
    assert variants.choose(detector, 0.8, settings(max_accuracy_drop=0.05), "val_f1") == "int8"
    assert variants.choose(detector, 0.8, settings(max_accuracy_drop=0.01), "val_f1") == "float32"


def test_an_accuracy_drop_below_one_validation_item_is_raised_to_one_item():
    # 10 validation recordings: int8 changes one decision (0.1); 0.01 cannot be resolved on 10 items
    table = {"float32": {"size_bytes": 100, "val_accuracy": 0.9}, "int8": {"size_bytes": 30, "val_accuracy": 0.8},
             "int16x8": {"size_bytes": 60, "val_accuracy": 0.7}}
    settings = config_module.ExportConfig(max_accuracy_drop=0.01)
    assert variants.choose(table, 0.9, settings) == "float32"  # no count given: the setting as written
    assert variants.choose(table, 0.9, settings, "val_accuracy", items=1000) == "float32"  # 0.001 per item
    assert variants.choose(table, 0.9, settings, "val_accuracy", items=10) == "int8"
    assert set(variants.allowed(table, 0.9, settings, "val_accuracy", items=10)) == {"float32", "int8"}  # not two
    _, limit, what = variants.losses(table, 0.9, settings, "val_accuracy", items=10)
    assert limit == pytest.approx(0.1)
    assert what == "export.max_accuracy_drop=0.01 raised to 0.1 (one of 10 validation items, the smallest drop " \
        "accuracy on them can show)"
    with pytest.raises(RuntimeError, match=r"within export.max_accuracy_drop=0.01 raised to 0.1 \(one of 10 "):
        variants.choose({"int8": table["int16x8"]}, 0.9, settings, "val_accuracy", items=10)  # 0.2: two items
    detector = {"float32": {"size_bytes": 100, "val_f1": 0.8}, "int8": {"size_bytes": 30, "val_f1": 0.7}}
    assert variants.choose(detector, 0.8, settings, "val_f1", items=10) == "float32"  # F1 has no such step


def test_classification_metrics_match_scikit_learn_and_a_hand_count():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    probabilities = np.eye(3)[[0, 1, 1, 1, 2, 0, 2]] * 0.7 + 0.1
    y_pred = probabilities.argmax(axis=1)
    result = metrics.classification(y_true, probabilities, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["macro_f1"] == pytest.approx(sk_metrics.f1_score(y_true, y_pred, average="macro"))
    assert result["macro_precision"] == pytest.approx(sk_metrics.precision_score(y_true, y_pred, average="macro"))
    assert result["macro_recall"] == pytest.approx(sk_metrics.recall_score(y_true, y_pred, average="macro"))
    assert result["roc_auc"] == pytest.approx(sk_metrics.roc_auc_score(y_true, probabilities, multi_class="ovr"))
    # class "a": TP 1, FP 1 (a c predicted a), FN 1, TN 4 -> specificity 4/5, NPV 4/5
    assert result["per_class"]["a"]["specificity"] == pytest.approx(4 / 5)
    assert result["per_class"]["a"]["npv"] == pytest.approx(4 / 5)
    # class "b": TP 2, FP 1, FN 0, TN 4 -> specificity 4/5, NPV 1
    assert result["per_class"]["b"]["specificity"] == pytest.approx(4 / 5)
    assert result["per_class"]["b"]["npv"] == pytest.approx(1.0)
    assert result["calibration"]["ece"] == pytest.approx(abs(0.8 - 5 / 7))  # every confidence is 0.8


def test_bootstrap_intervals_contain_the_estimate_and_are_seeded():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 300)
    probabilities = np.eye(3)[np.where(rng.random(300) < 0.8, y_true, (y_true + 1) % 3)]
    intervals = metrics.bootstrap(y_true, probabilities, "classification", 300, 0.95, seed=0)
    accuracy = (probabilities.argmax(axis=1) == y_true).mean()
    low, high = intervals["accuracy"]
    assert low < accuracy < high and 0.05 < high - low < 0.15  # about 2 * 1.96 * sqrt(0.8 * 0.2 / 300)
    assert intervals == metrics.bootstrap(y_true, probabilities, "classification", 300, 0.95, seed=0)


def test_regression_metrics_reproduce_a_hand_worked_case():
    result = metrics.regression(np.array([90, 50, 30, 60]), np.array([100, 25, 28, 75]))
    assert result["mae"] == pytest.approx(13.0)
    assert result["mse"] == pytest.approx(238.5)
    assert result["rmse"] == pytest.approx(np.sqrt(238.5))
    assert result["mape"] == pytest.approx(23.19, abs=0.005)


def test_frechet_distance_is_zero_for_one_gaussian_and_grows_with_the_mean_shift():
    from pipelines.training import fid

    samples = np.random.default_rng(0).normal(size=(4000, 3))
    assert fid.frechet_distance(samples, samples) == pytest.approx(0.0, abs=1e-6)
    shifted = samples + np.array([2.0, 0.0, 0.0])
    assert fid.frechet_distance(samples, shifted) == pytest.approx(4.0, rel=1e-3)


@pytest.mark.parametrize("scope", ["per_channel", "global"])
@pytest.mark.parametrize("method", ["zscore", "minmax"])
def test_the_normalizer_pass_over_chunks_matches_the_whole_array(monkeypatch, scope, method):
    from pipelines.data import splits

    x = np.random.default_rng(0).integers(0, 256, (300, 20, 20, 3), dtype=np.uint8)
    monkeypatch.setattr(splits, "CHUNK_BYTES", 8 * 20 * 20 * 3 * 7)  # 43 chunks of 7 items, the last short
    settings = config_module.load(None, [f"normalize.scope={scope}", f"normalize.method={method}"]).normalize
    fitted = splits.normalizer(x, settings, per_feature=False)
    values, axis = x.astype(np.float64), (0, 1, 2) if scope == "per_channel" else None
    if method == "zscore":
        expected = values.mean(axis=axis), values.var(axis=axis)
    else:
        expected = values.min(axis=axis), (values.max(axis=axis) - values.min(axis=axis)) ** 2
    assert np.allclose(fitted["mean"], np.atleast_1d(expected[0]), rtol=1e-12)
    assert np.allclose(fitted["variance"], np.atleast_1d(expected[1]), rtol=1e-12)
    table = np.random.default_rng(1).normal(5, 2, (101, 4))
    per_feature = splits.normalizer(table, settings, per_feature=True)
    assert len(per_feature["mean"]) == 4
