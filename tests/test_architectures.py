"""Denoising autoencoder and U-Net segmentation: builders, data, metrics, and both stages on tiny configs."""

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from models import autoencoder, unet
from pipelines.core import tracking
from pipelines.core.errors import DataError
from pipelines.data import segmentation
from pipelines.stages import clean, denoise, segment, split
from pipelines.training import metrics
from tests.conftest import png, tiny_config

SEGMENT = ["segment.canvas_size=16", "segment.train_canvases=40", "segment.val_canvases=12",
           "segment.filters=[4, 8]", "segment.epochs=1", "segment.digit_size=[6, 12]", "segment.batch_size=8",
           "segment.representative_samples=8"]


def test_latent_autoencoder_squeezes_to_two_numbers():
    model, encoder = autoencoder.build_latent_autoencoder((4, 8), (8, 8, 1), latent_dim=2, noise_std=10.0)
    images = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 1)).astype(np.float32)
    assert encoder(images).shape == (5, 2)
    reconstruction = model(images).numpy()
    assert reconstruction.shape == (5, 8, 8, 1) and 0 <= reconstruction.min() and reconstruction.max() <= 1


def test_unet_has_skips_and_the_plain_model_has_none():
    with_skips = unet.build_unet((4, 8, 16), 11, (16, 16, 1))
    plain = unet.build_unet((4, 8, 16), 11, (16, 16, 1), skips=False)
    concatenations = lambda model: [layer.name for layer in model.layers if "skip" in layer.name]  # noqa: E731
    assert concatenations(with_skips) == ["skip1", "skip0"] and concatenations(plain) == []
    probabilities = with_skips(np.zeros((2, 16, 16, 1), np.float32)).numpy()
    assert probabilities.shape == (2, 16, 16, 11)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="divisible by 4"):
        unet.build_unet((4, 8, 16), 11, (18, 18, 1))


def test_iou_and_pixel_accuracy_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    predicted = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])
    result = metrics.segmentation(truth, predicted, num_classes=4)
    assert result["pixel_accuracy"] == pytest.approx(6 / 8)
    # class 0: 3 hits, union 4; class 1: 3 hits, union 5; class 2: 0 hits, union 1; class 3 absent (NaN).
    np.testing.assert_allclose(result["iou"][:3], [3 / 4, 3 / 5, 0.0])
    assert np.isnan(result["iou"][3]) and result["miou"] == pytest.approx((3 / 4 + 3 / 5 + 0) / 3)


def test_dice_loss_is_zero_when_right_and_near_one_when_wrong():
    truth = np.array([[[0, 1], [1, 0]]])
    right = np.eye(2, dtype=np.float32)[truth]
    wrong = np.eye(2, dtype=np.float32)[1 - truth]
    assert float(unet.dice_loss(truth, right)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(unet.dice_loss(truth, wrong)[0]) > 0.7


def test_generated_canvases_are_seeded_and_labelled_where_digits_are():
    settings = tiny_config(".", *SEGMENT).segment
    first, second = segmentation.generate(settings), segmentation.generate(settings)
    assert first.x_train.shape == (40, 16, 16, 1) and first.y_val.shape == (12, 16, 16)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_val, second.y_val)
    assert first.y_train.max() <= 10 and len(first.class_names) == 11
    digit_pixels = first.x_train[..., 0][first.y_train > 0].astype(float)
    assert digit_pixels.mean() > first.x_train[..., 0][first.y_train == 0].mean() + 60  # strokes are bright
    other = segmentation.generate(tiny_config(".", *SEGMENT, "segment.seed=1").segment)
    assert not np.array_equal(first.x_train, other.x_train)


def _write_pairs(tmp_path, count, mask_value=1):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for index in range(count):
        Image.fromarray(np.full((20, 20), 40 * index, np.uint8)).save(images / f"item{index}.png")
        mask = np.zeros((20, 20), np.uint8)
        mask[5:15, 5:15] = mask_value
        Image.fromarray(mask).save(masks / f"item{index}.png")
    return images, masks


def test_user_folders_of_images_and_masks_load_and_bad_pairs_are_named(tmp_path):
    images, masks = _write_pairs(tmp_path, 5)
    overrides = [*SEGMENT, "segment.source=folders", f"segment.images_dir={images}", f"segment.masks_dir={masks}",
                 "segment.num_classes=3", "segment.val_fraction=0.4"]
    data = segmentation.load(tiny_config(tmp_path, *overrides).segment, tmp_path)
    assert data.x_train.shape == (3, 16, 16, 1) and data.y_val.shape == (2, 16, 16)
    assert set(np.unique(data.y_train)) == {0, 1}  # nearest resizing keeps class indices
    (masks / "item2.png").unlink()
    with pytest.raises(DataError, match="item2.png has no mask"):
        segmentation.load(tiny_config(tmp_path, *overrides).segment, tmp_path)
    bad_images, bad_masks = _write_pairs(tmp_path / "bad", 3, mask_value=7)
    with pytest.raises(DataError, match=r"item0.png holds class 7, but segment.num_classes is 3"):
        segmentation.load(tiny_config(tmp_path, *overrides[:-3], f"segment.images_dir={bad_images}",
                                 f"segment.masks_dir={bad_masks}", "segment.num_classes=3").segment, tmp_path)


@pytest.mark.slow
def test_segment_stage_trains_both_models_and_scores_the_unet_on_litert(tmp_path):
    config = tiny_config(tmp_path, *SEGMENT, "segment.epochs=10")
    result = segment.run(config)
    metrics = result.metrics
    # Chance, a uniformly random class per pixel, is about 1/11 pixel accuracy; background is most pixels.
    background = float((segmentation.generate(config.segment).y_val == 0).mean())
    assert metrics["segment/unet/val_pixel_accuracy"] > max(0.5, background - 0.05)
    assert metrics["segment/unet_tflite_float32/miou"] == pytest.approx(metrics["segment/unet/val_miou"], abs=0.02)
    table = pd.read_csv(result.folder / "per_class_iou.csv")
    assert table["unet_iou"].mean() == pytest.approx(metrics["segment/unet/val_miou"], abs=1e-3)
    assert table["plain_iou"].mean() == pytest.approx(metrics["segment/plain/val_miou"], abs=1e-3)
    png(result.folder / "predictions.png", (648, 972))
    assert metrics["segment/unet_tflite_float32/pixel_agreement"] > 0.99
    assert metrics["segment/unet_tflite_int8/size_bytes"] < metrics["segment/unet_tflite_float32/size_bytes"]
    rows = (result.folder / "per_class_iou.csv").read_text().splitlines()
    assert rows[0] == "class,unet_iou,plain_iou" and len(rows) == 12
    assert {"unet.keras", "plain.keras", "unet_int8.tflite", "predictions.png"} <= set(result.paths)
    tracking.configure(config)
    history = MlflowClient().get_metric_history(result.run_id, "segment/plain/val/loss")
    assert len(history) == 10
    assert segment.run(config).skipped


@pytest.mark.slow
def test_denoise_stage_reports_psnr_examples_and_the_latent_scatter(tmp_path):
    config = tiny_config(tmp_path, "denoise.filters=[4, 8]", "denoise.epochs=2", "denoise.latent_epochs=1")
    clean.run(config)
    split.run(config)
    result = denoise.run(config)
    metrics = result.metrics
    # std 40 on 0-255 gives about 20 log10(255 / 40) = 16.1 dB before clipping, a little more after.
    assert 15.5 < metrics["denoise/val_psnr_noisy_db"] < 19.5
    assert metrics["denoise/val_psnr_gain_db"] == pytest.approx(
        metrics["denoise/val_psnr_denoised_db"] - metrics["denoise/val_psnr_noisy_db"])
    assert np.isfinite(metrics["denoise/latent_val_psnr_denoised_db"])
    png(result.folder / "denoising_examples.png", (900, 297))
    png(result.folder / "latent_scatter.png", (540, 450))
    tracking.configure(config)
    artifacts = {item.path for item in MlflowClient().list_artifacts(result.run_id)}
    assert {"denoising_examples.png", "latent_scatter.png"} <= artifacts
    client = MlflowClient()
    assert len(client.get_metric_history(result.run_id, "denoise/train/loss")) == 2
    assert len(client.get_metric_history(result.run_id, "latent/train/loss")) == 1


def test_the_default_image_model_is_edge_sized_at_224_px_and_unchanged_for_small_digits():
    import models
    from pipelines.core import config as config_module

    settings = config_module.load(None, []).model
    build = models.architectures()["small_cnn"]
    large = build(settings, (224, 224, 3), 5, {"mean": [0.0] * 3, "variance": [1.0] * 3})
    kinds = [type(layer).__name__ for layer in large.layers]
    assert large.count_params() < 500_000 and "Flatten" not in kinds
    assert "SeparableConv2D" in kinds and "GlobalAveragePooling2D" in kinds
    small = build(settings, (16, 16, 1), 10, {"mean": [0.0], "variance": [1.0]})
    assert "Flatten" in [type(layer).__name__ for layer in small.layers]  # digits keep their measured model
    never = config_module.load(None, ["model.separable_from=0"]).model
    assert "Flatten" in [type(layer).__name__ for layer in build(never, (64, 64, 1), 2, {"mean": [0.0],
                                                                                        "variance": [1.0]}).layers]


def test_strided_blocks_halve_the_image_with_no_pooling_operator_and_fewer_macs_and_estimated_ms():
    import models
    from deploy import latency, micro, tflite
    from pipelines.core import config as config_module

    build = models.architectures()["small_cnn"]
    board = micro.resolve({"preset": "cortex_m4"})
    found = {}
    for downsample in ("pool", "stride"):
        settings = config_module.load(None, [f"model.downsample={downsample}", "model.filters=[8,16]",
                                             "model.dense_units=32"]).model
        model = build(settings, (16, 16, 1), 10, {"mean": [0.0], "variance": [1.0]})
        assert model.get_layer("flatten").input_shape[1:] == (4, 4, 16)  # both halve the image per block
        flatbuffer = tflite.convert(model, "int8", np.random.default_rng(0).uniform(0, 16, (8, 16, 16, 1)))
        cost = micro.cost(flatbuffer)
        found[downsample] = ([layer["op"] for layer in cost["layers"]], cost["macs"],
                             latency.estimate(flatbuffer, board)["ms"])
    (pool_ops, pool_macs, pool_ms), (stride_ops, stride_macs, stride_ms) = found["pool"], found["stride"]
    assert pool_ops.count("MAX_POOL_2D") == 2 and "MAX_POOL_2D" not in stride_ops
    assert stride_macs < pool_macs / 2 and stride_ms < pool_ms
    with pytest.raises(config_module.ConfigError, match="model.downsample"):
        config_module.load(None, ["model.downsample=avg"])
    with pytest.raises(config_module.ConfigError, match="model.downsample: 'stride' shapes small_cnn's blocks only"):
        config_module.load("configs/motions.yaml", ["model.downsample=stride"])
