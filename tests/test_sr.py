"""Super-resolution: the sub-pixel layer, the bicubic start, aligned patches, held-out checks, and the stage
trained for a few steps, killed and resumed."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

import models.sr as sr_models
from pipelines.core import config as config_module
from pipelines.core import tracking
from pipelines.stages import sr
from pipelines.training import superres
from tests.conftest import png, tiny_config

SR = ["sr.train_images=[astronaut, moon]", "sr.eval_images=[camera, coffee]", "sr.patch_size=16",
      "sr.patches=64", "sr.batch_size=8", "sr.filters=4", "sr.blocks=1", "sr.pixel_steps=6",
      "sr.adversarial_steps=4", "sr.feature_steps=3", "sr.feature_filters=4", "sr.discriminator_filters=4",
      "sr.log_every=2"]


def test_pixel_shuffle_moves_channels_into_2x2_blocks():
    maps = np.arange(2 * 3 * 4 * 8, dtype=np.float32).reshape(2, 3, 4, 8)  # 8 channels = 2 outputs x 2x2
    shuffled = sr_models.PixelShuffle(2)(maps).numpy()
    assert shuffled.shape == (2, 6, 8, 2)
    # Output pixel (2y + dy, 2x + dx, c) is input channel (dy * 2 + dx) * 2 + c at (y, x).
    for dy in range(2):
        for dx in range(2):
            first = (dy * 2 + dx) * 2
            np.testing.assert_array_equal(shuffled[:, dy::2, dx::2, :], maps[..., first:first + 2])


def test_untrained_generator_is_the_bicubic_baseline():
    low = np.random.default_rng(0).uniform(size=(10, 14, 3)).astype(np.float32)
    generator = sr_models.build_sr_generator(filters=4, blocks=1)
    np.testing.assert_allclose(np.clip(generator(low[None])[0].numpy(), 0, 1), superres.bicubic_upscale(low), atol=1e-5)
    assert sr_models.build_sr_discriminator(4)(np.zeros((2, 24, 24, 3), np.float32)).shape == (2, 1)


def test_patches_pair_each_high_res_patch_with_its_downscaled_self():
    image = superres.photographs(("astronaut",))["astronaut"]
    low, high = superres.patches([image], count=12, size=32, seed=3)
    assert low.shape == (12, 16, 16, 3) and high.shape == (12, 32, 32, 3)
    assert low.dtype == np.float32 and high.dtype == np.uint8  # high-res patches keep the photograph's 8 bits
    np.testing.assert_array_equal(superres.as_float(np.rint(image * 255).astype(np.uint8)).numpy(), image)
    for low_patch, high_patch in zip(low, superres.as_float(high).numpy()):  # rotated and flipped alike
        interior = (slice(4, 12), slice(4, 12))  # the anti-aliasing kernel reaches across the patch border
        np.testing.assert_allclose(superres.downscale(high_patch)[interior], low_patch[interior], atol=0.02)
    assert np.abs(low[0] - low[1]).mean() > 0.01  # different places


def test_the_pixel_phase_learning_rate_warms_up_linearly_then_decays_by_a_cosine_to_zero():
    schedule = superres.pixel_schedule(2e-3, 3000, 0.1)
    rates = {step: float(schedule(step)) for step in (0, 150, 300, 1650, 3000)}
    assert rates[0] == 0.0 and rates[3000] == pytest.approx(0.0, abs=1e-9)
    assert rates[150] == pytest.approx(1e-3) and rates[300] == pytest.approx(2e-3)  # the peak after 10%
    assert rates[1650] == pytest.approx(1e-3)  # half-way through the cosine
    assert float(superres.pixel_schedule(2e-3, 3000, 0.0)(0)) == pytest.approx(2e-3)  # no warm-up
    assert float(superres.pixel_schedule(2e-3, 2, 0.9)(1)) == pytest.approx(2e-3)  # at least one step of decay
    with pytest.raises(config_module.ConfigError, match="sr.warmup_fraction"):
        tiny_config(".", "sr.warmup_fraction=1.0")


def test_held_out_photographs_and_their_twins_cannot_be_trained_on():
    with pytest.raises(config_module.ConfigError, match=r"sr.eval_images: \['chelsea'\]"):
        tiny_config(".", "sr.train_images=[cat, moon]", "sr.eval_images=[chelsea]")
    with pytest.raises(config_module.ConfigError, match="sr.patch_size"):
        tiny_config(".", "sr.patch_size=15")
    photos = superres.photographs(("stereo_motorcycle", "moon"))
    assert set(photos) == {"stereo_motorcycle_left", "stereo_motorcycle_right", "moon"}
    copy = {"renamed": np.clip(photos["stereo_motorcycle_right"] * 1.05, 0, 1)}  # a copy under another name
    with pytest.raises(ValueError, match="'renamed' is a near-duplicate of training photograph 'stereo_motorcycle"):
        superres.check_held_out({"moon": photos["moon"], "stereo_motorcycle_right": photos["stereo_motorcycle_right"]},
                          copy, 0.28)
    superres.check_held_out({"moon": photos["moon"]}, copy, 0.28)  # a different photograph passes


def test_training_windows_end_at_each_log_step_and_at_the_end_of_each_phase():
    assert superres.windows(0, 6, 10, 2) == [(0, 2, 3, False), (6, 2, 2, True)]
    assert superres.windows(2, 6, 10, 2) == [(2, 2, 2, False), (6, 2, 2, True)]  # resumed at step 2
    assert superres.windows(0, 150, 330, 100) == [(0, 100, 1, False), (100, 50, 1, False), (150, 50, 1, True),
                                                 (200, 100, 1, True), (300, 30, 1, True)]
    assert superres.windows(0, 6, 6, 4) == [(0, 4, 1, False), (4, 2, 1, False)]  # no adversarial phase
    assert superres.windows(10, 6, 10, 2) == []  # nothing left


@pytest.mark.slow
def test_killed_sr_run_resumes_and_scores_both_phases_against_bicubic(tmp_path, monkeypatch, capsys):
    config = tiny_config(tmp_path, *SR)
    real_log = tracking.log_metrics
    calls = []

    def killed_at_second_log(metrics, step=None):
        calls.append(step)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real_log(metrics, step)

    monkeypatch.setattr(tracking, "log_metrics", killed_at_second_log)
    with pytest.raises(KeyboardInterrupt):
        sr.run(config)
    monkeypatch.setattr(tracking, "log_metrics", real_log)
    result = sr.run(config)
    assert "resuming from checkpoint at step 2" in capsys.readouterr().out
    history = MlflowClient().get_metric_history(result.run_id, "sr/pixel_loss")
    assert [point.step for point in history] == [4, 6, 8, 10]  # steps 3-10 only; the adversarial phase too
    metrics = result.metrics
    for method in ("bicubic", "pixel", "adversarial"):
        assert 20 < metrics[f"sr/psnr_{method}"] < 45 and 0.5 < metrics[f"sr/ssim_{method}"] <= 1
    # The generator starts at bicubic and a few tiny steps cannot move it far.
    assert abs(metrics["sr/psnr_pixel"] - metrics["sr/psnr_bicubic"]) < 1.0
    rows = (result.folder / "sr_scores.csv").read_text().splitlines()
    assert rows[0].startswith("image,bicubic_psnr") and [row.split(",")[0] for row in rows[1:]] == ["camera", "coffee"]
    png(result.folder / "sr_comparison.png", (1200, 520))  # 5 columns x 2 photographs at dpi 100
    table = pd.read_csv(result.folder / "sr_scores.csv")
    for method in ("bicubic", "pixel", "adversarial"):
        assert table[f"{method}_psnr"].mean() == pytest.approx(metrics[f"sr/psnr_{method}"], abs=1e-3)
    tracking.configure(config)
    artifacts = {item.path for item in MlflowClient().list_artifacts(result.run_id)}
    assert {"sr_scores.csv", "sr_comparison.png"} <= artifacts
    assert sr.run(config).skipped


@pytest.mark.slow
def test_adversarial_step_runs_compiled_under_a_mirrored_strategy(tmp_path):
    from pipelines.training import fitting

    config = tiny_config(tmp_path, *SR).sr
    strategy = fitting.strategy(config_module.RuntimeConfig(strategy="mirrored"))  # one replica on this CPU
    with strategy.scope():
        _, features = sr_models.build_feature_autoencoder(4)
    model = superres.build_model(config, features, strategy)
    superres.use_phase(model, adversarial=True)
    low = tf.random.uniform((8, 8, 8, 3))
    high = tf.random.uniform((8, 16, 16, 3))
    losses = model.train_on_batch(low, high, return_dict=True)
    assert set(losses) == {"pixel_loss", "content_loss", "adversarial_loss", "g_loss", "d_loss"}
    assert all(np.isfinite(float(value)) for value in losses.values())


@pytest.mark.parametrize("pixel_loss", ["l1", "mse"])
def test_the_pixel_phase_reports_the_configured_pixel_loss_of_the_generator_output(tmp_path, pixel_loss):
    from pipelines.training import fitting

    config = tiny_config(tmp_path, *SR, f"sr.pixel_loss={pixel_loss}").sr
    strategy = fitting.strategy(config_module.RuntimeConfig())
    with strategy.scope():
        _, features = sr_models.build_feature_autoencoder(4)
    model = superres.build_model(config, features, strategy)
    rng = np.random.default_rng(0)
    low = rng.uniform(size=(8, 8, 8, 3)).astype(np.float32)
    high = rng.uniform(size=(8, 16, 16, 3)).astype(np.float32)
    error = model.generator(low).numpy() - high  # the loss is taken before the step's update
    expected = np.abs(error).mean() if pixel_loss == "l1" else np.square(error).mean()
    losses = model.train_on_batch(low, high, return_dict=True)
    assert losses["pixel_loss"] == pytest.approx(expected, rel=1e-4)
    with pytest.raises(config_module.ConfigError, match="sr.pixel_loss"):
        tiny_config(tmp_path, "sr.pixel_loss=huber")
